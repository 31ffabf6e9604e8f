"""Builds and runs the collector: PKI, store, outputs, publisher, pipeline, gRPC server."""

from __future__ import annotations

import datetime as dt
import threading
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from prometheus_client import CollectorRegistry

from collector.admission import DeadlineWatch, EnrollGate, StreamGate
from collector.config import CollectorConfig, EnrollmentConfig, LimitsConfig
from collector.enroll import EnrollmentService
from collector.health_service import StorageHealth, add_health
from collector.ingest import Limits
from collector.metrics import IngestMeter, MeteredIngest, serve_metrics
from collector.metrics_http import MetricsServer
from collector.monitor import Monitor
from collector.outputs.base import Output
from collector.outputs.registry import OutputContext, configured_outputs
from collector.pipeline import Detector, Pipeline, Validate
from collector.pki import CertificateAuthority
from collector.publisher import Publisher
from collector.records import Record
from collector.renewal import AgentRenewer, configured_ca, ensure_server_certificate
from collector.revocation import watcher_for
from collector.sequence import SequenceMarks
from collector.server_certs import LiveServerCertificates
from collector.store import Store
from common.errors import SisguardError
from common.logs import get_logger
from common.process import serve_until_signalled
from sisguard.v1 import sisguard_pb2_grpc as pb_grpc

log = get_logger("sisguard.collector")


@dataclass(frozen=True)
class DataDir:
    """Where the collector keeps its state."""

    root: Path

    @property
    def pki(self) -> Path:
        return self.root / "pki"

    @property
    def db(self) -> Path:
        return self.root / "collector.db"

    @property
    def archive(self) -> Path:
        return self.root / "archive"

    @property
    def config(self) -> Path:
        return self.root / "collector.yml"

    @property
    def health(self) -> Path:
        return self.root / "health.json"


def server_credentials(data: DataDir, *, require_client_cert: bool,
                       certs: LiveServerCertificates | None = None) -> grpc.ServerCredentials:
    if certs is not None:   # reloaded and re-issued without a restart
        return certs.credentials(require_client_cert=require_client_cert)
    try:
        key = (data.pki / "server.key").read_bytes()
        chain = (data.pki / "server.crt").read_bytes() + (data.pki / "ca.crt").read_bytes()
        ca = (data.pki / "ca.crt").read_bytes()
    except OSError as e:
        raise SisguardError(f"{data.pki}: {e.strerror}: run 'sisguard-collector init' first") from e
    # The events port requires a client certificate signed by our CA (mutual TLS).
    # The enrollment port cannot (agents have no certificate yet): it is a server of its
    # own that serves Enroll only.
    return grpc.ssl_server_credentials([(key, chain)], root_certificates=ca,
                                       require_client_auth=require_client_cert)


def _bind(server: grpc.Server, address: str, credentials: grpc.ServerCredentials, *,
          what: str, flag: str) -> int:
    """Listen on ``address``, or say plainly that the port is taken and how to choose."""
    try:
        port = server.add_secure_port(address, credentials)
    except RuntimeError as e:   # grpcio raises where older versions returned 0
        raise SisguardError(_taken(address, what, flag)) from e
    if port == 0:
        raise SisguardError(_taken(address, what, flag))
    return port


def _taken(address: str, what: str, flag: str) -> str:
    return (f"cannot listen on {address} ({what} port): it is taken by another process or "
            f"not an address of this host; stop what listens there (ss -ltnp) or choose "
            f"another with {flag}")


def _ms(seconds: float) -> int:
    return max(1, int(seconds * 1000))


def events_server_options(limits: LimitsConfig) -> list[tuple[str, Any]]:
    """Connection limits of the events port: idle and old connections are closed (the
    agent reconnects and resends what was not acked), so is a connection whose TLS
    handshake does not finish in time; keepalive finds dead peers, and a client that
    pings more often than allowed is sent away (ping strikes)."""
    return [
        ("grpc.max_receive_message_length", limits.max_message_bytes),
        ("grpc.max_send_message_length", 1024 * 1024),
        ("grpc.max_connection_idle_ms", _ms(limits.connection_idle)),
        ("grpc.max_connection_age_ms", _ms(limits.connection_age)),
        ("grpc.max_connection_age_grace_ms", _ms(limits.connection_age_grace)),
        ("grpc.server_handshake_timeout_ms", _ms(limits.handshake_timeout)),
        ("grpc.keepalive_time_ms", 30_000),
        ("grpc.keepalive_timeout_ms", 10_000),
        ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
        ("grpc.http2.max_ping_strikes", 2),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.max_concurrent_streams", limits.max_streams_per_agent + 2),
        # gRPC sets SO_REUSEPORT by default: a second collector (or anything else) on the
        # same port would then share it silently; refuse to start instead
        ("grpc.so_reuseport", 0),
    ]


def enroll_server_options(enrollment: EnrollmentConfig) -> list[tuple[str, Any]]:
    """The enrollment port: small messages, short-lived connections. The per-call
    deadline is ours (DeadlineWatch); the connection age is the backstop behind it."""
    return [
        ("grpc.max_receive_message_length", 64 * 1024),
        ("grpc.max_send_message_length", 64 * 1024),
        ("grpc.max_connection_idle_ms", _ms(enrollment.deadline * 2)),
        ("grpc.max_connection_age_ms", _ms(enrollment.deadline * 6)),
        ("grpc.max_connection_age_grace_ms", _ms(enrollment.deadline)),
        ("grpc.http2.max_ping_strikes", 2),
        ("grpc.max_concurrent_streams", enrollment.max_concurrent),
        ("grpc.server_handshake_timeout_ms", _ms(enrollment.deadline * 2)),
        ("grpc.so_reuseport", 0),
    ]


def enroll_address(listen: str) -> str:
    """The enrollment port defaults to the events port + 1 (as Wazuh's 1514/1515)."""
    host, _, port = listen.rpartition(":")
    return f"{host}:{int(port) + 1}" if port.isdigit() and int(port) else f"{host}:0"


@dataclass
class Collector:
    config: CollectorConfig
    detector: Detector | None = None
    extra_outputs: list[Output] = field(default_factory=list)   # after the configured ones
    stopping: threading.Event = field(default_factory=threading.Event)
    config_source: str = "outputs"   # the config file, for errors about outputs

    def __post_init__(self) -> None:
        self.data = DataDir(self.config.data_dir)
        self.store = Store(self.data.db)
        self.ca = configured_ca(CertificateAuthority.load(self.data.pki), self.config.pki)
        self.revocations = watcher_for(self.config, ca=self.ca, store=self.store,
                                       pki_dir=self.data.pki)
        # every output from the registry, in one place; what they emit of their own goes
        # through the same publisher
        context = OutputContext(data_dir=self.data.root, emit=self._emit)
        self.outputs: list[Output] = configured_outputs(self.config, context,
                                                        source=self.config_source)
        self.outputs.extend(self.extra_outputs)
        self.pipeline = Pipeline([Validate()], detector=self.detector)
        limits = self.config.limits
        self.streams = StreamGate(max_streams_per_agent=limits.max_streams_per_agent,
                                  events_per_second=limits.events_per_second,
                                  stopping=self.stopping)
        ingest_limits = Limits(max_message_bytes=limits.max_message_bytes,
                               max_batch_events=limits.max_batch_events, window=limits.window,
                               max_seq_gap=limits.max_seq_gap,
                               max_seq_rate=limits.max_seq_rate)
        self.sequence = SequenceMarks(self.data.root / "sequence.json",
                                      ingest_limits.sequence_policy())
        # metrics: a registry of our own (never prometheus_client's global one)
        self.registry = CollectorRegistry(auto_describe=True)
        self.meter = IngestMeter(self.registry)
        self.publisher = Publisher(self.outputs, stopping=self.stopping, meter=self.meter)
        self.ingest = MeteredIngest(
            meter=self.meter, store=self.store, pipeline=self.pipeline,
            publisher=self.publisher,
            limits=ingest_limits, stopping=self.stopping, admission=self.streams,
            revocations=self.revocations, renewer=AgentRenewer(self.ca, self.store),
            sequence=self.sequence,
        )
        self.revocations.on_change = self.ingest.streams.cancel_refused
        enrollment = self.config.enrollment
        self.enroll_gate = EnrollGate(
            per_address_concurrent=enrollment.per_address_concurrent,
            per_minute=enrollment.per_address_per_minute, burst=enrollment.per_address_burst,
            log_window=enrollment.log_window, max_addresses=enrollment.max_addresses)
        self.enroll_watch = DeadlineWatch()
        self.enrollment = EnrollmentService(store=self.store, ca=self.ca,
                                            gate=self.enroll_gate, watch=self.enroll_watch,
                                            deadline=enrollment.deadline,
                                            pressure_deadline=enrollment.deadline_under_pressure,
                                            pressure_at=max(1, enrollment.threads // 2))
        self.health = StorageHealth(lambda: not self.stopping.is_set()
                                    and not self.storing_blocked())
        self.server: grpc.Server | None = None
        self.enroll_server: grpc.Server | None = None
        self.metrics_server: MetricsServer | None = None
        self.monitor: Monitor | None = None
        self.port = 0
        self.enroll_port = 0

    def start(self) -> int:
        for output in self.outputs:
            output.connect()
        renew_before = dt.timedelta(seconds=self.config.pki.renew_server_before)
        ensure_server_certificate(self.data.pki, self.ca, renew_before=renew_before)
        certs = LiveServerCertificates(self.data.pki, ca=self.ca, renew_before=renew_before)
        self.revocations.start()
        limits = self.config.limits
        # two servers, two budgets: no number of enrollment calls can take a thread or
        # an RPC slot from the event streams of enrolled agents
        server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=limits.max_streams + 8,
                                       thread_name_prefix="rpc"),
            options=events_server_options(limits), maximum_concurrent_rpcs=limits.max_streams,
        )
        pb_grpc.add_IngestServicer_to_server(self.ingest, server)
        add_health(server, self.health)
        self.port = _bind(server, self.config.listen,
                          server_credentials(self.data, require_client_cert=True, certs=certs),
                          what="events", flag="--listen")
        enrollment = self.config.enrollment
        enroll_server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=enrollment.threads,
                                       thread_name_prefix="enroll"),
            handlers=[self.enrollment.handler()],
            options=enroll_server_options(enrollment),
            maximum_concurrent_rpcs=enrollment.max_concurrent,
        )
        # the health service here too: a checker needs no agent certificate on this port
        add_health(enroll_server, self.health)
        enroll_listen = self.config.enroll_listen or enroll_address(self.config.listen)
        self.enroll_port = _bind(enroll_server, enroll_listen,
                                 server_credentials(self.data, require_client_cert=False,
                                                    certs=certs),
                                 what="enrollment", flag="enroll_listen (default: port + 1)")
        self.enroll_watch.start()
        server.start()
        enroll_server.start()
        self.enroll_server = enroll_server
        self.server = server
        self.monitor = Monitor(
            store=self.store, publisher=self.publisher,
            detect=self.detector.process if self.detector is not None else None,
            offline_after=self.config.health.offline_after_intervals,
            health=self.health_snapshot, health_path=self.data.health,
        )
        self.monitor.start()
        if self.config.metrics.listen:
            self.metrics_server = serve_metrics(self, self.registry)
        log.info("collector listening", listen=self.config.listen, port=self.port,
                 enroll_port=self.enroll_port, outputs=[o.name for o in self.outputs])
        return self.port

    def _emit(self, records: list[Record]) -> None:
        """OutputContext.emit: an output's own event or alert, through the publisher."""
        self.publisher.emit(records)

    def storing_blocked(self) -> bool:
        """An output cannot take batches now (an outage, or not ready since start)."""
        if self.publisher.outage_since is not None:
            return True
        return any(o.health().get("ready") is False for o in self.outputs)

    def health_snapshot(self) -> dict[str, Any]:
        ingest = self.ingest
        stats: Any = getattr(self.detector, "stats", None)
        return {
            "listen": self.config.listen, "port": self.port, "enroll_port": self.enroll_port,
            "storing": not self.storing_blocked(),   # what the gRPC health service says
            "ingest": {"batches": ingest.batches, "events": ingest.events,
                       "rejected": ingest.rejected,
                       "output_outage_since": self.publisher.outage_since},
            "pipeline": {name: vars(c) for name, c in self.pipeline.counters.items()},
            "stripped": dict(self.pipeline.stripped), "sequence": self.sequence.health(),
            "alerts": self.pipeline.alerts, "detection_errors": self.pipeline.detect_errors,
            "detection": stats() if callable(stats) else None,
            "outputs": {o.name: o.health() for o in self.outputs},
            "publisher": self.publisher_snapshot(),
            "admission": self.admission_snapshot(),
        }

    def publisher_snapshot(self) -> dict[str, Any]:
        keeper, counter = self.publisher.dead_letters, self.publisher.duplicates_from
        return {"outages": self.publisher.outages(),
                "dead_letters_to": getattr(keeper, "name", None),
                "duplicates_from": getattr(counter, "name", None),
                "offline_reports_waiting": len(self.monitor.pending) if self.monitor else 0}

    def admission_snapshot(self) -> dict[str, Any]:
        return {
            "enrollment": {"admitted": self.enroll_gate.admitted,
                           "in_progress": self.enroll_gate.in_progress(),
                           "signed": self.enrollment.signed,
                           "refused": self.enroll_gate.refusals.counts(),
                           "deadline_cancelled": self.enroll_watch.cancelled,
                           "under_pressure": self.enrollment.under_pressure},
            "streams": {"refused": self.streams.refused_streams,
                        "throttled_seconds": round(self.streams.throttled_seconds, 3)},
        }

    def stop(self, grace: float = 3.0) -> None:
        self.stopping.set()
        if self.metrics_server is not None:
            self.metrics_server.stop()
        if self.monitor is not None:
            self.monitor.stop()
        self.revocations.stop()
        if self.enroll_server is not None:
            self.enroll_server.stop(0).wait()
        if self.server is not None:
            self.server.stop(grace).wait()
        self.enroll_watch.stop()
        for output in self.outputs:
            output.close()
        self.sequence.close()
        self.store.close()

    def run_forever(self) -> None:
        serve_until_signalled(self.start, self.stop, log)
