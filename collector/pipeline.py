"""From envelopes to records: the stages, in order, each guarded and counted.

``Pipeline`` runs decode -> enrich -> the checks it is given (validate) -> detect
(``collector/stages.py``: one shape, ``process(event) -> event | None``). A stage that
raises ``Rejection`` rejects the event with that reason; a bug in a stage is counted as
the stage's error and rejects only that event (or, for detection, costs only its
alerts). Every envelope ends as a record (with the alerts it raised) or as a dead letter
with its reason: the publisher (``collector/publisher.py``) takes both from here.
"""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from collector.decoding import MAX_DOCUMENT_BYTES, Rejection
from collector.records import Kind, Record
from collector.stages import (
    AgentIdentity,
    Decode,
    Detect,
    Detector,
    Event,
    Stage,
    StageCounters,
    Validate,
)
from common.logs import get_logger
from sisguard.v1 import sisguard_pb2 as pb

log = get_logger("sisguard.collector.pipeline")

__all__ = ["AgentIdentity", "BatchOutcome", "Detector", "Enrich", "Pipeline", "Rejection",
           "Stage", "Validate"]


@dataclass
class BatchOutcome:
    records: list[Record] = field(default_factory=list)
    rejected: list[tuple[int, str]] = field(default_factory=list)   # (seq, reason)
    dead_letters: list[dict[str, Any]] = field(default_factory=list)


class Enrich:
    """What the collector knows better than the payload (``enrich``)."""

    name = "enrich"
    fatal = True

    def process(self, event: Event) -> Event | None:
        enrich(event.document, event.agent, event.envelope, event.ingested)
        return event


class Pipeline:
    """decode -> enrich -> ``checks`` -> detect (when there is a detector)."""

    def __init__(self, checks: Sequence[Stage], detector: Detector | None = None,
                 now: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC)) -> None:
        self.decode = Decode()
        self.detect = Detect(detector) if detector is not None else None
        # a detector that takes the batch at once (detection workers) runs after the
        # other stages of every event of the batch, not as one of them
        self.batched = self.detect is not None and self.detect.batched
        self.stages: list[Stage] = [self.decode, Enrich(), *checks]
        if self.detect is not None and not self.batched:
            self.stages.append(self.detect)
        self.detector = detector
        self.now = now
        self.counters = {s.name: StageCounters() for s in self.stages}
        if self.detect is not None:
            self.counters.setdefault(Detect.name, StageCounters())
        self._lock = threading.Lock()

    # what health and metrics read
    @property
    def stripped(self) -> dict[str, int]:
        return self.decode.stripped

    @property
    def alerts(self) -> int:
        return self.detect.alerts if self.detect is not None else 0

    @property
    def detect_errors(self) -> int:
        counters = self.counters.get(Detect.name)
        return counters.errors if counters is not None else 0

    def process_batch(self, agent: AgentIdentity, envelopes: Sequence[pb.Envelope],
                      *, skip_detection: Callable[[int], bool] = lambda seq: False,
                      refuse: Callable[[int], str | None] = lambda seq: None
                      ) -> BatchOutcome:
        """Every envelope ends as a record or a dead letter with its reason (``refuse``
        is asked first, in batch order: a reason refuses the event's sequence number)."""
        out = BatchOutcome()
        ingested = self.now().strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        deferred: list[Event] = []   # for a batched detector, after the loop
        for env in envelopes:
            try:
                refused = refuse(env.seq)
                if refused is not None:
                    raise Rejection(refused)
                event = self.run(Event(env, agent, ingested,
                                       detect=not skip_detection(env.seq)))
            except Rejection as e:
                self._reject(out, agent, env, str(e), ingested)
                continue
            except Exception as e:  # one bad event (or a bug) costs only that event
                log.exception("event not processed", agent_id=agent.agent_id, seq=env.seq)
                self._reject(out, agent, env, f"internal error: {type(e).__name__}: {e}",
                             ingested)
                continue
            if event is None:
                continue
            doc = event.document
            out.records.append(Record(Kind.EVENT, doc["event"]["id"], doc,
                                      agent_id=agent.agent_id, seq=env.seq))
            if self.batched and event.detect:
                deferred.append(event)
            out.records.extend(Record(Kind.ALERT, str(a["event"]["id"]), a)
                               for a in event.alerts)
        if deferred:
            out.records.extend(self._detect_batch(deferred))
        return out

    def _detect_batch(self, events: list[Event]) -> list[Record]:
        """The batched detector over ``events``; a failure costs their alerts only."""
        assert self.detect is not None
        counters = self.counters[Detect.name]
        try:
            self.detect.process_many(events)
        except Exception:
            with self._lock:
                counters.errors += len(events)
            log.exception("detection failed", events=len(events))
            return []
        with self._lock:
            counters.passed += len(events)
        return [Record(Kind.ALERT, str(a["event"]["id"]), a) for e in events for a in e.alerts]

    def run(self, event: Event) -> Event | None:
        """The stages in order; raises Rejection (the reason) when one rejects it."""
        current: Event | None = event
        for stage in self.stages:
            counters = self.counters[stage.name]
            assert current is not None
            try:
                result = stage.process(current)
            except Rejection:
                with self._lock:
                    counters.rejected += 1
                raise
            except Exception as e:  # a bug in a stage must not stop the stream
                with self._lock:
                    counters.errors += 1
                log.exception("stage failed", stage=stage.name,
                              agent_id=current.agent.agent_id, seq=current.seq)
                if not stage.fatal:
                    continue
                raise Rejection(f"stage {stage.name} failed: {type(e).__name__}: {e}") from e
            with self._lock:
                counters.passed += 1
            if result is None:
                return None
            current = result
        return current

    @staticmethod
    def _reject(out: BatchOutcome, agent: AgentIdentity, env: pb.Envelope, reason: str,
                ingested: str) -> None:
        reason = reason if len(reason) <= 1024 else reason[:1021] + "..."
        out.rejected.append((env.seq, reason))
        out.dead_letters.append({
            "agent": {"id": agent.agent_id}, "sequence": env.seq, "reason": reason,
            "dataset": env.dataset[:256], "ingested": ingested,
            # in full up to the size cap: a refused number may be an honest agent's event
            "document": env.document[:MAX_DOCUMENT_BYTES].decode("utf-8", errors="replace"),
        })
        log.warning("event rejected", agent_id=agent.agent_id, seq=env.seq, reason=reason)


def enrich(event: dict[str, Any], agent: AgentIdentity, env: pb.Envelope, ingested: str) -> None:
    """What the collector knows better than the payload: who sent it, and when it came."""
    ev = event.get("event")
    if not isinstance(ev, dict):
        ev = event["event"] = {}
    ev["id"] = f"{agent.agent_id}-{env.seq}"
    ev["sequence"] = env.seq
    ev["ingested"] = ingested
    event["agent"] = {
        "id": agent.agent_id, "name": agent.hostname, "type": "sisguard",
        "version": agent.version,
    }
    host = event.get("host")
    if not isinstance(host, dict):
        host = {}
        event["host"] = host
    host["name"] = agent.hostname
    event["organization"] = {"id": agent.organization_id, "name": agent.organization}
