"""The stages of the collector's pipeline, all of one shape (libbeat's processors):
``process(event) -> event | None``.

An ``Event`` carries one envelope through the stages: its raw bytes, who sent it, when
it came, the document once decoded, and the alerts detection raised on it. A stage
returns the event (changed or not), returns None to drop it quietly, or raises
``Rejection`` with the reason the event is dead-lettered for. ``collector/pipeline.py``
runs them in order, each guarded and counted (passed, rejected, errors): a bug in a stage
costs the one event, never the stream. A stage whose failure must not cost the event
(detection: the event is stored without the alerts) says so with ``fatal = False``.

The stages, in the order the collector runs them:

* ``Decode``   the agent's bytes to a JSON object (``collector/decoding.py``), fields only
               the collector writes cut and counted;
* ``Enrich``   what the collector knows better than the payload (``collector/pipeline.py``:
               ``enrich``);
* ``Validate`` required fields present and of the right shape;
* ``Detect``   the rules (behind ``Detector``: one method, so that detection can run
               elsewhere, in worker processes say); not run again for a resent event.
"""

from __future__ import annotations

import datetime as dt
import threading
from dataclasses import dataclass, field
from typing import Any, Protocol

from collector.decoding import Rejection, decode_document
from collector.tenants import derived_id
from common.logs import get_logger
from sisguard.v1 import sisguard_pb2 as pb

log = get_logger("sisguard.collector.stages")

REQUIRED = ("@timestamp", "event.kind", "event.dataset")
__all__ = ["AgentIdentity", "Decode", "Detect", "Detector", "Event", "Rejection", "Stage",
           "StageCounters", "Validate"]


@dataclass(frozen=True)
class AgentIdentity:
    """Who sent the batch: from the verified client certificate and the enrollment.
    Without an organization id, the one derived from the name (collector/tenants.py)."""

    agent_id: str
    hostname: str
    organization: str
    version: str
    organization_id: str = ""

    def __post_init__(self) -> None:
        if not self.organization_id:
            object.__setattr__(self, "organization_id", derived_id(self.organization))


@dataclass
class Event:
    """One envelope on its way through the stages."""

    envelope: pb.Envelope
    agent: AgentIdentity
    ingested: str                          # when the batch came (ISO-8601, UTC)
    detect: bool = True                    # False for a resend: detection ran on it once
    document: dict[str, Any] = field(default_factory=dict)   # set by Decode
    alerts: list[dict[str, Any]] = field(default_factory=list)  # set by Detect

    @property
    def seq(self) -> int:
        return int(self.envelope.seq)


class Stage(Protocol):
    name: str
    fatal: bool      # an exception in the stage rejects the event (else: it goes on)

    def process(self, event: Event) -> Event | None: ...


class Detector(Protocol):
    """Detection: the alerts one enriched event raises (collector/detection)."""

    def process(self, event: dict[str, Any]) -> list[dict[str, Any]]: ...


class BatchDetector(Detector, Protocol):
    """A detector that takes a batch at once (collector/detection/workers.py): the alerts
    of each event, in order."""

    def process_many(self, events: list[dict[str, Any]]) -> list[list[dict[str, Any]]]: ...


@dataclass
class StageCounters:
    passed: int = 0
    rejected: int = 0
    errors: int = 0


class Decode:
    """The agent's bytes to a document; fields only the collector writes are cut, noted
    under ``sisguard.stripped`` and counted by name in ``stripped``."""

    name = "decode"
    fatal = True

    def __init__(self) -> None:
        self.stripped: dict[str, int] = {}   # owned field -> agent documents it was cut from
        self._lock = threading.Lock()

    def process(self, event: Event) -> Event | None:
        document, stripped = decode_document(event.envelope.document)
        if stripped:
            document.setdefault("sisguard", {})["stripped"] = stripped
            with self._lock:
                for name in stripped:
                    self.stripped[name] = self.stripped.get(name, 0) + 1
            log.warning("fields only the collector writes cut from an agent document",
                        seq=event.seq, fields=stripped)
        event.document = document
        return event


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
    fatal = True

    def process(self, event: Event) -> Event | None:
        doc = event.document
        for path in REQUIRED:
            value = _get(doc, path)
            if value is None or value == "":
                raise Rejection(f"missing required field '{path}'")
        ts = doc["@timestamp"]
        if not isinstance(ts, str):
            raise Rejection("'@timestamp' must be an ISO-8601 string")
        try:
            dt.datetime.fromisoformat(ts.replace("Z", "+00:00"))
        except ValueError as e:
            raise Rejection(f"'@timestamp' is not ISO-8601: {ts!r}") from e
        return event


class Detect:
    """The rules, once per event: a resent event (``event.detect`` False) raised its
    alerts the first time. A detection failure costs the alerts, never the event."""

    name = "detect"
    fatal = False

    def __init__(self, detector: Detector) -> None:
        self.detector = detector
        many = getattr(detector, "process_many", None)
        self.batched = callable(many)
        self.alerts = 0
        self._lock = threading.Lock()

    def process_many(self, events: list[Event]) -> None:
        """A batched detector (``BatchDetector``) over events that all want detection."""
        detector: Any = self.detector
        found: list[list[dict[str, Any]]] = detector.process_many([e.document for e in events])
        if len(found) != len(events):
            raise RuntimeError(f"detector answered {len(found)} of {len(events)} events")
        for event, alerts in zip(events, found, strict=True):
            event.alerts.extend(alerts)
            with self._lock:
                self.alerts += len(alerts)

    def process(self, event: Event) -> Event | None:
        if not event.detect:
            return event
        alerts = self.detector.process(event.document)
        event.alerts.extend(alerts)
        with self._lock:
            self.alerts += len(alerts)
        return event
