"""From envelopes to records: decode -> validate -> enrich -> detect.

Each stage has one signature, ``process(event) -> event | None`` (None: the event is
rejected and the stage says why through ``Rejection``). Each stage is guarded and
counted: one bad event or one bug in a stage is reported and never stops the stream.
"""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from collector.decoding import MAX_DOCUMENT_BYTES, Rejection, decode_document
from collector.records import Kind, Record
from common.logs import get_logger
from sisguard.v1 import sisguard_pb2 as pb

log = get_logger("sisguard.collector.pipeline")

REQUIRED = ("@timestamp", "event.kind", "event.dataset")
__all__ = ["AgentIdentity", "BatchOutcome", "Pipeline", "Rejection", "Validate"]


@dataclass(frozen=True)
class AgentIdentity:
    """Who sent the batch: from the verified client certificate and the enrollment."""

    agent_id: str
    hostname: str
    organization: str
    version: str


class Stage(Protocol):
    name: str

    def process(self, event: dict[str, Any]) -> dict[str, Any] | None: ...


class Detector(Protocol):
    def process(self, event: dict[str, Any]) -> list[dict[str, Any]]: ...


class BatchDetector(Detector, Protocol):
    """A detector that takes a batch at once (collector/detection/workers.py)."""

    def process_many(self, events: Sequence[dict[str, Any]]) -> list[list[dict[str, Any]]]: ...


def _get(doc: dict[str, Any], dotted: str) -> Any:
    node: Any = doc
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


class Validate:
    """Required fields present and of the right shape."""

    name = "validate"

    def process(self, event: dict[str, Any]) -> dict[str, Any] | None:
        for path in REQUIRED:
            value = _get(event, path)
            if value is None or value == "":
                raise Rejection(f"missing required field '{path}'")
        ts = event["@timestamp"]
        if not isinstance(ts, str):
            raise Rejection("'@timestamp' must be an ISO-8601 string")
        try:
            dt.datetime.fromisoformat(ts.replace("Z", "+00:00"))
        except ValueError as e:
            raise Rejection(f"'@timestamp' is not ISO-8601: {ts!r}") from e
        return event


@dataclass
class StageCounters:
    passed: int = 0
    rejected: int = 0
    errors: int = 0


@dataclass
class BatchOutcome:
    records: list[Record] = field(default_factory=list)
    rejected: list[tuple[int, str]] = field(default_factory=list)   # (seq, reason)
    dead_letters: list[dict[str, Any]] = field(default_factory=list)


class Pipeline:
    def __init__(self, stages: Sequence[Stage], detector: Detector | None = None,
                 now: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC)) -> None:
        self.stages = list(stages)
        self.detector = detector
        self.now = now
        self.counters = {s.name: StageCounters() for s in self.stages}
        self.detect_errors = 0
        self.alerts = 0
        self.stripped: dict[str, int] = {}   # owned field -> agent documents it was cut from
        self._lock = threading.Lock()

    def process_batch(self, agent: AgentIdentity, envelopes: Sequence[pb.Envelope],
                      *, skip_detection: Callable[[int], bool] = lambda seq: False,
                      refuse: Callable[[int], str | None] = lambda seq: None
                      ) -> BatchOutcome:
        """Every envelope ends as a record or a dead letter with its reason (``refuse``
        is asked first, in batch order: a reason refuses the event's sequence number)."""
        out = BatchOutcome()
        ingested = self.now().strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        many = getattr(self.detector, "process_many", None)
        detect: list[dict[str, Any]] = []   # for process_many, after the loop
        for env in envelopes:
            try:
                refused = refuse(env.seq)
                if refused is not None:
                    raise Rejection(refused)
                event = self._decode(env)
                enrich(event, agent, env, ingested)
                processed = self._stages(event)
            except Rejection as e:
                self._reject(out, agent, env, str(e), ingested)
                continue
            except Exception as e:  # one bad event (or a bug) costs only that event
                log.exception("event not processed", agent_id=agent.agent_id, seq=env.seq)
                self._reject(out, agent, env, f"internal error: {type(e).__name__}: {e}",
                             ingested)
                continue
            if processed is None:
                continue
            out.records.append(Record(Kind.EVENT, processed["event"]["id"], processed,
                                      agent_id=agent.agent_id, seq=env.seq))
            if self.detector is not None and not skip_detection(env.seq):
                if many is not None:
                    detect.append(processed)
                else:
                    out.records.extend(self._detect(processed))
        if detect:
            out.records.extend(self._detect_many(many, detect))
        return out

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

    def _decode(self, env: pb.Envelope) -> dict[str, Any]:
        event, stripped = decode_document(env.document)
        if stripped:
            event.setdefault("sisguard", {})["stripped"] = stripped
            with self._lock:
                for name in stripped:
                    self.stripped[name] = self.stripped.get(name, 0) + 1
            log.warning("fields only the collector writes cut from an agent document",
                        seq=env.seq, fields=stripped)
        return event

    def _stages(self, event: dict[str, Any]) -> dict[str, Any] | None:
        current: dict[str, Any] | None = event
        for stage in self.stages:
            counters = self.counters[stage.name]
            try:
                current = stage.process(current)  # type: ignore[arg-type]
            except Rejection:
                with self._lock:
                    counters.rejected += 1
                raise
            except Exception as e:  # a bug in a stage must not stop the stream
                with self._lock:
                    counters.errors += 1
                log.exception("stage failed", stage=stage.name)
                raise Rejection(f"stage {stage.name} failed: {type(e).__name__}: {e}") from e
            with self._lock:
                counters.passed += 1
            if current is None:
                return None
        return current

    def _detect(self, event: dict[str, Any]) -> list[Record]:
        assert self.detector is not None
        try:
            alerts = self.detector.process(event)
        except Exception:
            with self._lock:
                self.detect_errors += 1
            log.exception("detection failed", event_id=event.get("event", {}).get("id"))
            return []
        with self._lock:
            self.alerts += len(alerts)
        return [Record(Kind.ALERT, str(a["event"]["id"]), a) for a in alerts]

    def _detect_many(self, many: Any, events: list[dict[str, Any]]) -> list[Record]:
        try:
            per_event: list[list[dict[str, Any]]] = many(events)
        except Exception:
            with self._lock:
                self.detect_errors += len(events)
            log.exception("detection failed", events=len(events))
            return []
        alerts = [a for found in per_event for a in found]
        with self._lock:
            self.alerts += len(alerts)
        return [Record(Kind.ALERT, str(a["event"]["id"]), a) for a in alerts]


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
    event["organization"] = {"name": agent.organization}
