"""The one publisher: every producer's records reach every output through here (libbeat's
publisher pipeline, in small).

A producer (the ingest stream, the offline monitor, an output raising an alert of its
own through ``OutputContext.emit``) hands over a ``Delivery``: records, and the dead
letters of the events its batch rejected. The publisher owns what happens next:

* **dead letters first, once**: to the first output that keeps them (``KeepsDeadLetters``);
  a batch resent after a lost ack does not write them again (``RecentDeadLetters``);
* **every output, each until it has stored the records**: an output that raises
  ``OutputUnavailable`` is retried with backoff (``deliver``: the ingest stream, which
  acks only after) or on the producer's next round (``attempt``: the monitor). A
  ``Delivery`` remembers which outputs have it, so a retry never sends the records again
  to an output that stored them;
* **the duplicate count** the ack reports, from the first output that detects duplicates
  exactly (``CountsDuplicates``): the archive, else Elasticsearch;
* **the floor** of an agent's sequence numbers: the highest one an output stores
  (``KnowsMarks``), for ``collector/sequence.py``;
* **the meter** (``PublishMeter``, ``collector/metrics.py``): outage state, batches
  waiting, time per output, alerts stored.

What only some outputs can do is asked by attribute, never by their class.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from collector.outputs.base import Output, OutputUnavailable
from collector.records import Outcome, PublishResult, Record
from common.logs import get_logger

log = get_logger("sisguard.collector.publisher")

DEAD_LETTERS = "dead letters"   # the step's name in logs and metrics
MAX_PARTIAL = 256               # emitted deliveries remembered half done


class KeepsDeadLetters(Protocol):
    """An output that keeps rejected events, durably, with their reason."""

    def dead_letter(self, entries: Sequence[dict[str, Any]]) -> None: ...


class KnowsMarks(Protocol):
    """An output that can say the highest sequence number it stores for an agent.
    ``marks_local``: exact and cheap (asked before every batch, as marks saved before a
    crash may lag it); else asked once, for an agent the collector has no mark for."""

    marks_local: bool

    def high_water_mark(self, agent_id: str) -> int: ...


class CountsDuplicates(Protocol):
    """An output whose ``Outcome.DUPLICATE`` is exact (``counts_duplicates = True``):
    the first such output says how many events of a batch the ack counts as duplicates."""

    counts_duplicates: bool


class PublishMeter(Protocol):
    """What the publisher reports (``collector.metrics.IngestMeter``)."""

    def failed(self, output: str) -> None: ...

    def succeeded(self, output: str) -> None: ...

    def waiting(self, output: str, delta: int) -> None: ...

    def took(self, output: str, seconds: float) -> None: ...

    def stored(self, records: Sequence[Record]) -> None: ...


def keeps_dead_letters(output: Output) -> KeepsDeadLetters | None:
    return output if callable(getattr(output, "dead_letter", None)) else None  # type: ignore[return-value]


def knows_marks(output: Output) -> KnowsMarks | None:
    if callable(getattr(output, "high_water_mark", None)):
        return output  # type: ignore[return-value]
    return None


def counts_duplicates(output: Output) -> bool:
    return getattr(output, "counts_duplicates", False) is True


class RecentDeadLetters:
    """The last dead letters written, so that a batch resent after a lost ack does not
    write its dead letters again (the Ack still says rejected). Bounded in entries."""

    def __init__(self, size: int = 10_000) -> None:
        self.size = size
        self._seen: OrderedDict[tuple[str, int, int], None] = OrderedDict()
        self._lock = threading.Lock()

    @staticmethod
    def _key(entry: dict[str, Any]) -> tuple[str, int, int]:
        return (str(entry["agent"]["id"]), int(entry["sequence"]), hash(entry["document"]))

    def fresh(self, entries: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        with self._lock:
            return [e for e in entries if self._key(e) not in self._seen]

    def add(self, entries: Sequence[dict[str, Any]]) -> None:
        with self._lock:
            for entry in entries:
                self._seen[self._key(entry)] = None
            while len(self._seen) > self.size:
                self._seen.popitem(last=False)


@dataclass
class Delivery:
    """Records (and dead letters) on their way to every output."""

    records: list[Record]
    dead_letters: list[dict[str, Any]] = field(default_factory=list)
    done: set[str] = field(default_factory=set)   # steps (output names) that have it
    duplicates: int = 0                             # agent events already stored
    complete: bool = False


class Publisher:
    def __init__(self, outputs: Sequence[Output], *, stopping: threading.Event,
                 meter: PublishMeter | None = None, first_retry: float = 0.5,
                 max_retry: float = 30.0) -> None:
        names = [o.name for o in outputs]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice or DEAD_LETTERS in names:
            raise ValueError(f"output names must be unique and not {DEAD_LETTERS!r}: "
                             f"{', '.join(twice) or DEAD_LETTERS}")
        self.outputs = list(outputs)
        self.stopping = stopping
        self.meter = meter
        self.first_retry = first_retry
        self.max_retry = max_retry
        self.dead_letters = next((k for k in map(keeps_dead_letters, self.outputs) if k), None)
        self.duplicates_from = next((o for o in self.outputs if counts_duplicates(o)), None)
        self._marks = [m for m in map(knows_marks, self.outputs) if m is not None]
        self._recent = RecentDeadLetters()
        self._partial: OrderedDict[tuple[str, ...], Delivery] = OrderedDict()
        self._lock = threading.Lock()
        self._outages: dict[str, float] = {}   # step -> time.time() of its first failure
        self._errors: dict[str, str] = {}      # step -> its last OutputUnavailable

    # state
    @property
    def outage_since(self) -> float | None:
        """When the oldest outage still going on began (None: every output is up)."""
        with self._lock:
            return min(self._outages.values(), default=None)

    def outages(self) -> dict[str, float]:
        with self._lock:
            return dict(self._outages)

    # producing
    def delivery(self, records: Sequence[Record],
                 dead_letters: Sequence[dict[str, Any]] = ()) -> Delivery:
        entries = self._recent.fresh(dead_letters) if self.dead_letters is not None else []
        if dead_letters and self.dead_letters is None:
            log.warning("no output keeps dead letters: rejected events are only acked "
                        "as rejected", entries=len(dead_letters))
        return Delivery(list(records), entries)

    def deliver(self, delivery: Delivery, *, alive: Callable[[], bool] = lambda: True) -> bool:
        """Every output stores the delivery; an unavailable one is retried with backoff.
        False: the collector is stopping or the producer went away first (not stored)."""
        for name, step in self._steps(delivery):
            started = time.monotonic()
            self._waiting(name, +1)
            try:
                delay = self.first_retry
                while not self._try(delivery, name, step):
                    log.error("output unavailable, batch not acked", output=name,
                              error=self._errors.get(name, ""), retry_in=delay)
                    if self.stopping.wait(delay) or not alive():
                        return False
                    delay = min(delay * 2, self.max_retry)
            finally:
                self._waiting(name, -1)
            if self.meter is not None:
                self.meter.took(name, time.monotonic() - started)
        return self._completed(delivery)

    def attempt(self, delivery: Delivery) -> bool:
        """One try of every output that does not have the delivery yet; True when every
        output has it (the producer tries again later otherwise)."""
        ok = True
        for name, step in self._steps(delivery):
            ok = self._try(delivery, name, step) and ok
        return ok and self._completed(delivery)

    def emit(self, records: list[Record]) -> None:
        """``OutputContext.emit``: one try; raises OutputUnavailable while an output
        cannot take them. Called again with the same records, it resumes where it
        stopped (the outputs that stored them are not sent them again)."""
        key = tuple(r.doc_id for r in records)
        with self._lock:
            delivery = self._partial.pop(key, None)
        delivery = delivery or self.delivery(records)
        if self.attempt(delivery):
            return
        with self._lock:
            self._partial[key] = delivery
            while len(self._partial) > MAX_PARTIAL:
                self._partial.popitem(last=False)
        missing = [o.name for o in self.outputs if o.name not in delivery.done]
        raise OutputUnavailable(f"not stored yet by: {', '.join(missing)}")

    def floor(self, agent_id: str, *, has_mark: bool) -> int:
        """The highest number an output stores for the agent: a local output's (the
        archive) always; else, for an agent without a mark here, the first output that
        can tell (Elasticsearch, shared by every collector)."""
        local = next((m for m in self._marks if getattr(m, "marks_local", False)), None)
        if local is not None:
            return local.high_water_mark(agent_id)
        if has_mark:
            return 0
        for output in self._marks:
            try:
                return output.high_water_mark(agent_id)
            except OutputUnavailable as e:
                log.warning("agent's highest stored number unknown; its first batch "
                            "sets the mark", agent_id=agent_id, error=str(e))
        return 0

    # internals
    def _steps(self, delivery: Delivery) -> list[tuple[str, Callable[[], None]]]:
        steps: list[tuple[str, Callable[[], None]]] = []
        sink = self.dead_letters
        if delivery.dead_letters and sink is not None and DEAD_LETTERS not in delivery.done:
            entries = delivery.dead_letters

            def keep() -> None:
                sink.dead_letter(entries)
                self._recent.add(entries)

            steps.append((DEAD_LETTERS, keep))
        for output in self.outputs:
            if output.name in delivery.done:
                continue

            def publish(output: Output = output) -> None:
                result = output.publish(delivery.records)
                if output is self.duplicates_from:
                    delivery.duplicates = _duplicates(delivery.records, result)

            steps.append((output.name, publish))
        return steps

    def _try(self, delivery: Delivery, name: str, step: Callable[[], None]) -> bool:
        try:
            step()
        except OutputUnavailable as e:
            with self._lock:
                first = name not in self._outages
                self._outages.setdefault(name, time.time())
                self._errors[name] = str(e)
            if self.meter is not None:
                self.meter.failed(name)
            if first:
                log.error("output unavailable", output=name, error=str(e))
            return False
        with self._lock:
            back = self._outages.pop(name, None)
            self._errors.pop(name, None)
        if self.meter is not None:
            self.meter.succeeded(name)
        if back is not None:
            log.info("output available again", output=name,
                     outage_seconds=round(time.time() - back, 3))
        delivery.done.add(name)
        return True

    def _completed(self, delivery: Delivery) -> bool:
        if not delivery.complete:
            delivery.complete = True
            if self.meter is not None:
                self.meter.stored(delivery.records)
        return True

    def _waiting(self, name: str, delta: int) -> None:
        if self.meter is not None:
            self.meter.waiting(name, delta)


def _duplicates(records: Sequence[Record], result: PublishResult) -> int:
    """Agent events (seq > 0) the output already had: the ack counts them apart."""
    return sum(1 for r, o in zip(records, result.outcomes, strict=True)
               if o is Outcome.DUPLICATE and r.seq)
