"""Prometheus metrics of the collector (``--metrics HOST:PORT``, ``/metrics``).

Most figures already exist as counters in the collector's parts (the ones
``health_snapshot`` shows): ``CollectorMetrics`` reads them at scrape time, nothing is
counted twice. What no part measures is measured by ``IngestMeter``: the ack latency,
each output's time to store a batch, which output is in an outage and how many batches
wait for it, alerts by rule and severity, open streams. The publisher
(``collector/publisher.py``) feeds it for every producer (the ingest stream, the offline
monitor); ``MeteredIngest`` adds the ack latency and the open streams.

Every label has a bound: outputs, stages, stripped fields, refusal reasons and sequence
refusal kinds are closed sets of the code; rule ids come from the rules the operator
loaded; per-agent series exist only for agents known to the store (enrolled, or carrying a
certificate of our CA), at most ``metrics.max_agent_series`` of them; beyond that, only
the totals. Any family that would still grow past ``MAX_LABEL_SETS`` folds the rest into
one ``other`` series.

The HTTP server is ours (``collector/metrics_http.py``), with a bounded number of threads.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import grpc
from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector as PromCollector

from collector.health import agent_status
from collector.ingest import IngestService
from collector.metrics_http import MetricsServer
from collector.publisher import DEAD_LETTERS
from collector.records import Kind, Record
from common.errors import SisguardError
from common.logs import get_logger
from sisguard.v1 import sisguard_pb2 as pb

if TYPE_CHECKING:
    from collector.pipeline import AgentIdentity
    from collector.server import Collector

log = get_logger("sisguard.collector.metrics")
MAX_LABEL_SETS = 1000   # per family; the rest is one "other" series
OTHER = "other"
# an ack can wait for an outage to end: buckets up to ten minutes
ACK_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
               300.0, 600.0)
OUTPUT_NAMES_DEAD_LETTERS = DEAD_LETTERS


class IngestMeter:
    """What only the ingest path can measure; thread-safe, bounded."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.ack_seconds = Histogram(
            "sisguard_ack_latency_seconds",
            "From a batch's arrival to its ack (includes waiting for an output outage)",
            buckets=ACK_BUCKETS, registry=registry)
        self.publish_seconds = Histogram(
            "sisguard_output_batch_seconds",
            "Time for one output to durably take one batch, retries included",
            ["output"], buckets=ACK_BUCKETS, registry=registry)
        self._lock = threading.Lock()
        self.outage_since: dict[str, float] = {}     # output -> time.time() of the first failure
        self.pending: dict[str, int] = {}            # output -> batches waiting for it
        self.alerts: dict[tuple[str, str], int] = {}  # (rule id, severity) -> alerts stored
        self.streams: dict[str, int] = {}            # agent id -> open streams

    # outputs
    def waiting(self, output: str, delta: int) -> None:
        with self._lock:
            self.pending[output] = max(0, self.pending.get(output, 0) + delta)

    def failed(self, output: str) -> None:
        with self._lock:
            self.outage_since.setdefault(output, time.time())

    def succeeded(self, output: str) -> None:
        with self._lock:
            self.outage_since.pop(output, None)

    def took(self, output: str, seconds: float) -> None:
        self.publish_seconds.labels(output).observe(seconds)

    def outages(self) -> dict[str, float]:
        with self._lock:
            return dict(self.outage_since)

    # alerts
    def stored(self, records: Sequence[Record]) -> None:
        with self._lock:
            for record in records:
                if record.kind is not Kind.ALERT:
                    continue
                key = _alert_labels(record.document)
                if key not in self.alerts and len(self.alerts) >= MAX_LABEL_SETS:
                    key = (OTHER, OTHER)
                self.alerts[key] = self.alerts.get(key, 0) + 1

    # streams
    def stream(self, agent_id: str, delta: int) -> None:
        with self._lock:
            n = self.streams.get(agent_id, 0) + delta
            if n > 0:
                self.streams[agent_id] = n
            else:
                self.streams.pop(agent_id, None)

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {"pending": dict(self.pending), "alerts": dict(self.alerts),
                    "streams": dict(self.streams), "outage_since": dict(self.outage_since)}


def _alert_labels(alert: dict[str, Any]) -> tuple[str, str]:
    """(rule id, severity level) of an alert the collector made (bounded strings)."""
    rule = alert.get("rule")
    rule_id = rule.get("id") if isinstance(rule, dict) else None
    level: Any = None
    ours = alert.get("sisguard")
    if isinstance(ours, dict) and isinstance(ours.get("alert"), dict):
        level = ours["alert"].get("level")
    return (str(rule_id)[:128] if rule_id else "unknown",
            str(level)[:32] if level else "unknown")


class MeteredIngest(IngestService):
    """The ingest service, timed and watched: the ack latency and the open streams (the
    publisher meters the outputs)."""

    def __init__(self, *, meter: IngestMeter, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.meter = meter

    def Stream(self, request_iterator: Iterator[pb.AgentMessage],
               context: grpc.ServicerContext) -> Iterator[pb.CollectorMessage]:
        inner = super().Stream(request_iterator, context)
        agent_id = ""
        try:
            for message in inner:
                if not agent_id and message.WhichOneof("kind") == "welcome":
                    agent_id = message.welcome.agent_id
                    self.meter.stream(agent_id, +1)
                yield message
        finally:
            close = getattr(inner, "close", None)   # a generator: end it here
            if close is not None:
                close()
            if agent_id:
                self.meter.stream(agent_id, -1)

    def _handle_batch(self, agent: AgentIdentity, batch: pb.EventBatch,
                      context: grpc.ServicerContext) -> pb.Ack | None:
        started = time.monotonic()
        ack = super()._handle_batch(agent, batch, context)
        if ack is not None:
            self.meter.ack_seconds.observe(time.monotonic() - started)
        return ack


def _bounded(items: dict[str, Any]) -> Iterator[tuple[str, Any]]:
    """At most MAX_LABEL_SETS label values; the rest summed into OTHER (numbers only)."""
    rest = 0.0
    for i, (key, value) in enumerate(sorted(items.items())):
        if i < MAX_LABEL_SETS - 1:
            yield str(key), value
        elif isinstance(value, (int, float)):
            rest += value
    if len(items) >= MAX_LABEL_SETS:
        yield OTHER, rest


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


OUTPUT_OUTCOMES = {"stored": "stored", "duplicates": "duplicate",
                   "dead_lettered": "dead_lettered"}

# what an export with a disk queue (collector/outputs/forwarder.py) says in health()
EXPORT_GAUGES = {
    "queue_depth": ("sisguard_export_queue_records", "Records waiting in the export's queue"),
    "queue_bytes": ("sisguard_export_queue_bytes", "Bytes the export's queue holds"),
    "queue_max_bytes": ("sisguard_export_queue_max_bytes", "The export queue's bound"),
    "oldest_age": ("sisguard_export_oldest_seconds",
                   "Age of the oldest record not yet delivered (0: none)"),
}
EXPORT_COUNTERS = {
    "delivered": ("sisguard_export_delivered", "Records the destination took"),
    "rejected": ("sisguard_export_rejected", "Records the destination refused for good"),
    "dropped": ("sisguard_export_dropped", "Records not queued: the queue was full"),
}


def export_metrics(outputs: Iterable[Any]) -> Iterator[Metric]:
    """Queue depth, age, deliveries, drops and outage of every output with a queue."""
    gauges = {key: GaugeMetricFamily(name, text, labels=["output"])
              for key, (name, text) in EXPORT_GAUGES.items()}
    counters = {key: CounterMetricFamily(name, text, labels=["output"])
                for key, (name, text) in EXPORT_COUNTERS.items()}
    up = GaugeMetricFamily("sisguard_export_up",
                           "1 while the export delivers, 0 while its destination fails",
                           labels=["output"])
    for output in outputs:
        health = output.health()
        if "queue_depth" not in health:
            continue
        for key, family in gauges.items():
            family.add_metric([output.name], _number(health.get(key)) or 0.0)
        for key, counter in counters.items():
            counter.add_metric([output.name], _number(health.get(key)) or 0.0)
        up.add_metric([output.name], 0 if health.get("outage_since") else 1)
    yield from (*gauges.values(), *counters.values(), up)


class CollectorMetrics(PromCollector):
    """Reads the collector's counters at scrape time."""

    def __init__(self, collector: Collector, *, max_agent_series: int) -> None:
        self.collector = collector
        self.max_agent_series = max_agent_series

    def collect(self) -> Iterator[Metric]:
        c = self.collector
        yield from self._ingest(c)
        yield from self._outputs(c)
        yield from self._detection(c)
        yield from self._admission(c)
        try:
            yield from self._agents(c)
        except Exception:   # the store is busy or broken: the rest of the scrape stands
            log.exception("agent metrics not read")

    def _ingest(self, c: Collector) -> Iterator[Metric]:
        ingest = c.ingest
        yield CounterMetricFamily("sisguard_ingest_batches", "Batches acked",
                                  value=ingest.batches)
        yield CounterMetricFamily("sisguard_events_received",
                                  "Events received in acked batches", value=ingest.events)
        yield CounterMetricFamily(
            "sisguard_events_rejected",
            "Events refused (undecodable, invalid, sequence) and kept as dead letters",
            value=ingest.rejected)
        stages = CounterMetricFamily("sisguard_stage_events", "Events through each stage",
                                     labels=["stage", "result"])
        for name, counters in c.pipeline.counters.items():
            for result, value in vars(counters).items():
                stages.add_metric([name, result], value)
        yield stages
        stripped = CounterMetricFamily(
            "sisguard_stripped_fields",
            "Agent documents a field only the collector writes was cut from", labels=["field"])
        for name, value in _bounded(dict(c.pipeline.stripped)):
            stripped.add_metric([name], value)
        yield stripped
        sequence = c.sequence.health()
        refused = CounterMetricFamily("sisguard_sequence_refused",
                                      "Events refused for their sequence number",
                                      labels=["kind"])
        for kind, value in _bounded(dict(sequence.get("refused") or {})):
            refused.add_metric([kind], value)
        yield refused
        meter = c.meter.snapshot()
        streams: dict[str, int] = meter["streams"]
        yield GaugeMetricFamily("sisguard_agents_connected", "Agents with an open stream",
                                value=len(streams))
        yield GaugeMetricFamily("sisguard_streams", "Open event streams",
                                value=sum(streams.values()))

    def _outputs(self, c: Collector) -> Iterator[Metric]:
        meter = c.meter.snapshot()
        outages: dict[str, float] = meter["outage_since"]
        pending: dict[str, int] = meter["pending"]
        docs = CounterMetricFamily("sisguard_output_documents",
                                   "Documents each output ended, by outcome",
                                   labels=["output", "outcome"])
        unavailable = CounterMetricFamily("sisguard_output_unavailable",
                                          "Failed attempts of each output", labels=["output"])
        up = GaugeMetricFamily("sisguard_output_up",
                               "1 while the output takes batches, 0 during an outage",
                               labels=["output"])
        outage = GaugeMetricFamily("sisguard_output_outage_seconds",
                                   "Seconds since the output's outage began (0: up)",
                                   labels=["output"])
        queue = GaugeMetricFamily("sisguard_output_pending_batches",
                                  "Batches waiting for the output (not acked to agents)",
                                  labels=["output"])
        now = time.time()
        names = [o.name for o in c.outputs]
        if c.publisher.dead_letters is not None:
            names.append(OUTPUT_NAMES_DEAD_LETTERS)
        for output in c.outputs:
            health = output.health()
            for key, outcome in OUTPUT_OUTCOMES.items():
                value = _number(health.get(key))
                if value is not None:
                    docs.add_metric([output.name, outcome], value)
            value = _number(health.get("unavailable"))
            if value is not None:
                unavailable.add_metric([output.name], value)
        for name in names:
            since = outages.get(name)
            up.add_metric([name], 0 if since is not None else 1)
            outage.add_metric([name], max(0.0, now - since) if since is not None else 0)
            queue.add_metric([name], pending.get(name, 0))
        yield from (docs, unavailable, up, outage, queue)
        yield from export_metrics(c.outputs)
        yield GaugeMetricFamily("sisguard_output_outage",
                                "1 while any output is in an outage (batches not acked)",
                                value=1 if c.storing_blocked() else 0)

    def _detection(self, c: Collector) -> Iterator[Metric]:
        stats_fn: Any = getattr(c.detector, "stats", None)
        stats: dict[str, Any] = stats_fn() if callable(stats_fn) else {}
        result: Any = getattr(c.detector, "result", None)
        yield GaugeMetricFamily("sisguard_rules_loaded", "Detection rules in force",
                                value=_number(stats.get("rules_loaded")) or 0)
        yield GaugeMetricFamily("sisguard_rule_load_errors",
                                "Rule files or rules that did not load (the last load)",
                                value=len(getattr(result, "errors", ()) or ()))
        yield CounterMetricFamily("sisguard_detection_errors",
                                  "Events detection failed on (the event is still stored)",
                                  value=(_number(stats.get("errors")) or 0)
                                  + c.pipeline.detect_errors)
        alerts = CounterMetricFamily("sisguard_alerts", "Alerts stored, by rule and severity",
                                     labels=["rule_id", "severity"])
        for (rule_id, severity), value in sorted(c.meter.snapshot()["alerts"].items()):
            alerts.add_metric([rule_id, severity], value)
        yield alerts

    def _admission(self, c: Collector) -> Iterator[Metric]:
        refused = CounterMetricFamily("sisguard_enroll_refused",
                                      "Enrollment attempts refused, by reason",
                                      labels=["reason"])
        for reason, value in _bounded(c.enroll_gate.refusals.counts()):
            refused.add_metric([reason], value)
        yield refused
        yield CounterMetricFamily("sisguard_enroll_signed", "Agent certificates signed",
                                  value=c.enrollment.signed)
        yield CounterMetricFamily("sisguard_enroll_deadline_cancelled",
                                  "Enrollment calls cancelled at their deadline",
                                  value=c.enroll_watch.cancelled)
        yield CounterMetricFamily("sisguard_streams_refused",
                                  "Event streams refused (the agent had its fill)",
                                  value=c.streams.refused_streams)
        yield CounterMetricFamily("sisguard_stream_throttled_seconds",
                                  "Seconds agents were held by their event rate limit",
                                  value=c.streams.throttled_seconds)

    def _agents(self, c: Collector) -> Iterator[Metric]:
        agents = c.store.agents()
        offline_after = c.config.health.offline_after_intervals
        by_status: dict[str, int] = {"online": 0, "offline": 0, "never seen": 0, "revoked": 0}
        dropped = GaugeMetricFamily(
            "sisguard_agent_spool_dropped",
            "Events the agent's spool dropped, from its last heartbeat", labels=["agent_id"])
        depth = GaugeMetricFamily("sisguard_agent_spool_events",
                                  "Events in the agent's spool, from its last heartbeat",
                                  labels=["agent_id"])
        total_dropped = 0.0
        for i, agent in enumerate(agents):
            status = agent_status(agent, offline_after=offline_after)
            by_status[status] = by_status.get(status, 0) + 1
            hb = agent.heartbeat or {}
            lost = _number(hb.get("spool_dropped")) or 0.0
            total_dropped += lost
            if i < self.max_agent_series and not agent.revoked:
                dropped.add_metric([agent.agent_id], lost)
                depth.add_metric([agent.agent_id], _number(hb.get("spool_events")) or 0.0)
        statuses = GaugeMetricFamily("sisguard_agents", "Agents known, by status",
                                     labels=["status"])
        for status, n in sorted(by_status.items()):
            statuses.add_metric([status], n)
        yield statuses
        yield dropped
        yield depth
        yield GaugeMetricFamily("sisguard_agents_spool_dropped",
                                "Spool drops reported by all agents (last heartbeats)",
                                value=total_dropped)


def parse_listen(listen: str) -> tuple[str, int]:
    """HOST:PORT (IPv6 in brackets) -> (host, port); errors name the setting."""
    host, sep, port = listen.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise SisguardError(f"metrics.listen: {listen!r} is not HOST:PORT")
    return host or "0.0.0.0", int(port)


def serve_metrics(collector: Collector, registry: CollectorRegistry) -> MetricsServer:
    config = collector.config.metrics
    assert config.listen is not None
    host, port = parse_listen(config.listen)
    registry.register(CollectorMetrics(collector, max_agent_series=config.max_agent_series))
    try:
        server = MetricsServer((host, port), registry,
                               max_connections=config.max_connections,
                               timeout=config.timeout)
    except OSError as e:
        raise SisguardError(f"cannot listen on {config.listen} (metrics port): {e.strerror}; "
                            f"choose another with --metrics or metrics.listen") from e
    server.start()
    log.info("metrics served", listen=config.listen, port=server.port)
    return server
