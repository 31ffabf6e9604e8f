"""What every upstream export shares: a filter, a disk queue, a sender thread.

``publish(records)`` keeps the records this export wants (``FilterConfig``) and returns
as soon as they are in its disk queue (diskqueue.py): the agent's ack never waits for
the SOC, and a SOC outage neither loses events nor stalls ingest. A sender thread takes
batches from the queue's head and hands them to ``deliver`` (the syslog or HTTPS
client); a record leaves the queue only when ``deliver`` says the destination took it
(or refused it for good: counted, logged, never retried). While the destination fails,
the sender waits ``backoff_initial`` doubling up to ``backoff_max``.

When the queue is full the newest records are dropped (diskqueue.py says why), counted,
and at most once per ``drop_alert_every`` an alert says how many (``context.emit``: it
goes to Elasticsearch, the archive and every export, including this one, through a
reserve of the queue kept for it).
"""

from __future__ import annotations

import hashlib
import json
import random
import ssl
import threading
import time
from abc import abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from collector.outputs.base import Output, OutputUnavailable
from collector.outputs.diskqueue import DiskQueue, Item, QueueError
from collector.outputs.registry import OutputContext
from collector.records import Kind, Outcome, PublishResult, Record
from common.errors import ConfigError
from common.logs import get_logger
from common.yamlconf import Duration, Size

log = get_logger("sisguard.collector.export")

DROP_RULE_ID = "builtin-export-queue-full"
_DROP_ID_PREFIX = "export-dropped-"


@dataclass(frozen=True)
class FilterConfig:
    """Which records an export takes: alerts (by default), and events of the datasets
    named (none by default), each with ``event.severity`` >= ``min_severity``."""

    alerts: bool = True
    event_datasets: tuple[str, ...] = ()     # e.g. [sisguard.fim, sisguard.auth]
    min_severity: int = 0                    # 0-100; a record without one counts as 0

    def __post_init__(self) -> None:
        if not 0 <= self.min_severity <= 100:
            raise TypeError(f"min_severity must be 0 to 100, got {self.min_severity!r}")

    def wants(self, record: Record) -> bool:
        doc_event = record.document.get("event")
        event = doc_event if isinstance(doc_event, dict) else {}
        if record.kind is Kind.ALERT:
            if not self.alerts:
                return False
        elif event.get("dataset") not in self.event_datasets:
            return False
        severity = event.get("severity")
        if not isinstance(severity, int) or isinstance(severity, bool):
            severity = 0
        return severity >= self.min_severity


@dataclass(frozen=True)
class QueueConfig:
    max_bytes: Size = Size(256 * 1024 * 1024)   # of records waiting; beyond: dropped
    max_record_bytes: Size = Size(1024 * 1024)  # a larger record is refused (dead letter)
    batch_max_records: int = 500                 # per delivery
    batch_max_bytes: Size = Size(4 * 1024 * 1024)
    backoff_initial: Duration = Duration(0.5)    # after a failed delivery, doubling
    backoff_max: Duration = Duration(60.0)
    drop_alert_every: Duration = Duration(60.0)  # at most one queue-full alert per period
    remember_sent: int = 100_000                 # delivered ids kept to refuse resends

    def __post_init__(self) -> None:
        for name in ("max_bytes", "max_record_bytes", "batch_max_records",
                     "batch_max_bytes", "backoff_initial", "backoff_max",
                     "drop_alert_every"):
            if not getattr(self, name) > 0:
                raise TypeError(f"{name} must be more than 0")
        if self.backoff_max < self.backoff_initial:
            raise TypeError("backoff_max must be at least backoff_initial")


def dumps(document: Any) -> bytes:
    """Compact UTF-8 JSON; text that is not valid Unicode (a lone surrogate) is written
    as ``\\u`` escapes instead of failing: one odd record costs nothing."""
    try:
        return json.dumps(document, ensure_ascii=False, separators=(",", ":"),
                          default=str).encode()
    except UnicodeEncodeError:
        return json.dumps(document, separators=(",", ":"), default=str).encode()


def with_id(record: Record) -> dict[str, Any]:
    """The document as exported: its ``event.id`` is the record's id (the receiver's
    dedupe key), whatever the document said (a copy only when they differ)."""
    doc = record.document
    event = doc.get("event")
    if isinstance(event, dict) and event.get("id") == record.doc_id:
        return doc
    return {**doc, "event": {**(event if isinstance(event, dict) else {}),
                             "id": record.doc_id}}


def client_tls(where: str, *, ca: Path | None, cert: Path | None,
               key: Path | None) -> ssl.SSLContext:
    """A TLS client context (TLS 1.2 at least, the server's certificate and name
    checked); a file that cannot be read is a ConfigError naming it."""
    try:
        tls = ssl.create_default_context(cafile=str(ca) if ca else None)
    except (OSError, ssl.SSLError) as e:
        raise ConfigError(f"{where}: ca {ca}: {e}") from e
    tls.minimum_version = ssl.TLSVersion.TLSv1_2
    if cert is not None and key is not None:
        try:
            tls.load_cert_chain(str(cert), str(key))
        except (OSError, ssl.SSLError) as e:
            raise ConfigError(f"{where}: cert {cert} / key {key}: {e}") from e
    return tls


class DeliveryFailed(Exception):
    """The destination did not take the batch now (down, slow, 5xx): retry it later."""


@dataclass
class Delivery:
    """What the destination did with a batch; what is in neither list is retried."""

    taken: list[Item] = field(default_factory=list)
    refused: list[tuple[Item, str]] = field(default_factory=list)   # never retried


class QueuedOutput(Output):
    """An export: subclasses implement ``deliver`` (and may override ``disconnect``)."""

    def __init__(self, name: str, *, queue: QueueConfig, filter: FilterConfig,
                 context: OutputContext) -> None:
        self.name = name
        self.queue_config = queue
        self.filter = filter
        self.context = context
        self.queue: DiskQueue | None = None
        self._stopping = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._started = time.time()
        self.outage_since: float | None = None
        self.last_error = ""
        self.last_delivery: float | None = None
        self.too_large = 0
        self._alerted_drops = 0          # dropped records an alert has told of
        self._last_drop_alert = 0.0

    # Output
    def connect(self) -> None:
        q = self.queue_config
        path = self.context.data_dir / "outputs" / self.name / "queue.sqlite"
        try:
            self.queue = DiskQueue(path, max_bytes=q.max_bytes,
                                   reserve_bytes=max(64 * 1024, q.max_bytes // 100),
                                   remember_sent=q.remember_sent)
        except QueueError as e:
            raise OutputUnavailable(f"output {self.name}: {e}") from e
        log.info("export queue open", output=self.name, waiting=self.queue.depth(),
                 bytes=self.queue.size(), max_bytes=q.max_bytes)
        self._thread = threading.Thread(target=self._run, name=f"export-{self.name}",
                                        daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self.disconnect()
        if self.queue is not None:
            self.queue.close()

    def publish(self, records: Sequence[Record]) -> PublishResult:
        if self.queue is None:
            raise OutputUnavailable(f"output {self.name}: not connected")
        result = PublishResult([Outcome.STORED] * len(records))
        wanted: list[tuple[str, str, bytes]] = []
        index: dict[str, int] = {}
        reserve = False
        for i, record in enumerate(records):
            if not self.filter.wants(record):
                continue                    # not for this export: nothing to do
            body = dumps(with_id(record))
            if len(body) > self.queue_config.max_record_bytes:
                self.too_large += 1
                result.outcomes[i] = Outcome.DEAD_LETTERED
                result.reasons[i] = (f"output {self.name}: record of {len(body)} bytes "
                                     f"exceeds max_record_bytes")
                continue
            reserve = reserve or record.doc_id.startswith(_DROP_ID_PREFIX)
            index[record.doc_id] = i
            wanted.append((record.doc_id, record.kind.value, body))
        if not wanted:
            return result
        try:
            put = self.queue.put(wanted, reserve=reserve)
        except QueueError as e:
            raise OutputUnavailable(f"output {self.name}: {e}") from e
        for doc_id in put.duplicate_ids:
            result.outcomes[index[doc_id]] = Outcome.DUPLICATE
        for doc_id in put.dropped_ids:
            i = index[doc_id]
            result.outcomes[i] = Outcome.DEAD_LETTERED
            result.reasons[i] = f"output {self.name}: export queue full, dropped"
        if put.dropped:
            log.warning("export queue full, newest records dropped", output=self.name,
                        dropped=put.dropped, dropped_total=self.queue.dropped)
        self._wake.set()
        return result

    def health(self) -> dict[str, Any]:
        q = self.queue
        return {
            "type": self.type_name(), "queue_depth": q.depth() if q else 0,
            "queue_bytes": q.size() if q else 0,
            "queue_max_bytes": self.queue_config.max_bytes,
            "oldest_age": q.oldest_age() if q else None,
            "delivered": q.delivered if q else 0, "rejected": q.rejected if q else 0,
            "dropped": q.dropped if q else 0, "too_large": self.too_large,
            "outage_since": self.outage_since, "last_error": self.last_error,
            "last_delivery": self.last_delivery,
        }

    # what a destination implements
    @abstractmethod
    def type_name(self) -> str: ...

    @abstractmethod
    def deliver(self, items: list[Item]) -> Delivery:
        """Send ``items``; raise DeliveryFailed when none can be sent now."""

    def disconnect(self) -> None:
        """Drop any connection (called on failure and at close)."""

    # the sender
    def _run(self) -> None:
        delay = float(self.queue_config.backoff_initial)
        while not self._stopping.is_set():
            try:
                delay = self._step(delay)
            except Exception as e:  # a bug or a full disk must not end the sender
                log.exception("export sender failed unexpectedly", output=self.name,
                              error=repr(e))
                self._failed(repr(e), delay)
                self.disconnect()
                self._stopping.wait(delay)
                delay = min(delay * 2, float(self.queue_config.backoff_max))

    def _step(self, delay: float) -> float:
        """One delivery from the queue's head; returns the next backoff."""
        q = self.queue_config
        self._maybe_alert_drops()
        assert self.queue is not None
        items = self.queue.peek(max_items=q.batch_max_records, max_bytes=q.batch_max_bytes)
        if not items:
            self._wake.wait(1.0)
            self._wake.clear()
            return delay
        try:
            done = self.deliver(items)
        except DeliveryFailed as e:
            self._failed(str(e), delay)
            self.disconnect()
            # jitter: several collectors do not retry in step
            self._stopping.wait(delay * random.uniform(0.8, 1.0))
            return min(delay * 2, float(q.backoff_max))
        self.queue.ack(done.taken)
        if done.refused:
            self.queue.reject([item for item, _ in done.refused])
            for item, reason in done.refused[:10]:
                log.error("destination refused a record for good; not retried",
                          output=self.name, id=item.id, reason=reason)
        if not (done.taken or done.refused):
            return delay
        if self.outage_since is not None:
            log.info("export destination back", output=self.name,
                     down_for=round(time.time() - self.outage_since, 1))
        self.outage_since = None
        self.last_delivery = time.time()
        return float(q.backoff_initial)

    def _failed(self, error: str, delay: float) -> None:
        first = self.outage_since is None
        if first:
            self.outage_since = time.time()
        self.last_error = error[:500]
        if first or delay >= float(self.queue_config.backoff_max):
            log.error("export destination unavailable; records stay queued",
                      output=self.name, error=self.last_error, retry_in=round(delay, 2),
                      waiting=self.queue.depth() if self.queue else 0)

    def _maybe_alert_drops(self) -> None:
        queue = self.queue
        emit = self.context.emit
        if queue is None or emit is None or queue.dropped <= self._alerted_drops:
            return
        now = time.time()
        if now - self._last_drop_alert < float(self.queue_config.drop_alert_every):
            return
        total = queue.dropped
        alert = drop_alert(self.name, dropped=total - self._alerted_drops, total=total,
                           max_bytes=self.queue_config.max_bytes, started=self._started,
                           now=now)
        try:
            emit([Record(Kind.ALERT, alert["event"]["id"], alert)])
        except OutputUnavailable as e:
            log.warning("queue-full alert not stored yet; retried", output=self.name,
                        error=str(e))
            return
        self._last_drop_alert = now
        self._alerted_drops = total


def drop_alert(output: str, *, dropped: int, total: int, max_bytes: int, started: float,
               now: float) -> dict[str, Any]:
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1000):03d}Z"
    digest = hashlib.sha256(f"{output}\n{started}\n{total}".encode()).hexdigest()[:32]
    return {
        "@timestamp": stamp,
        "message": (f"export {output}: its queue is full ({max_bytes} bytes); {dropped} "
                    f"records were not sent upstream ({total} since start). They are "
                    f"still in Elasticsearch or the archive."),
        "event": {"kind": "alert", "category": ["host"], "type": ["info"],
                  "action": "export_queue_full", "module": "sisguard",
                  "dataset": "sisguard.alert", "severity": 73,
                  "id": _DROP_ID_PREFIX + digest, "ingested": stamp},
        "rule": {"id": DROP_RULE_ID, "name": "Sisguard Export Queue Full",
                 "ruleset": "sisguard-builtin"},
        "sisguard": {"alert": {"level": "high", "count": dropped},
                     "export": {"output": output, "dropped": dropped,
                                "dropped_total": total, "max_bytes": max_bytes}},
    }
