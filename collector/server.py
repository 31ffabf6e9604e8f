"""Builds and runs the collector: PKI, store, outputs, pipeline, gRPC server."""

from __future__ import annotations

import threading
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

from collector.config import CollectorConfig
from collector.enroll import EnrollmentService
from collector.ingest import IngestService, Limits
from collector.monitor import Monitor
from collector.outputs.archive import JsonlArchive
from collector.outputs.base import Output, Record
from collector.pipeline import Detector, Pipeline, Validate
from collector.pki import CertificateAuthority
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


def server_credentials(data: DataDir, *, require_client_cert: bool) -> grpc.ServerCredentials:
    try:
        key = (data.pki / "server.key").read_bytes()
        chain = (data.pki / "server.crt").read_bytes() + (data.pki / "ca.crt").read_bytes()
        ca = (data.pki / "ca.crt").read_bytes()
    except OSError as e:
        raise SisguardError(f"{data.pki}: {e.strerror}: run 'sisguard-collector init' first") from e
    # The events port requires a client certificate signed by our CA (mutual TLS).
    # The enrollment port cannot (agents have no certificate yet): there, Stream refuses
    # every call for want of a certificate, and only Enroll is of use.
    return grpc.ssl_server_credentials([(key, chain)], root_certificates=ca,
                                       require_client_auth=require_client_cert)


def enroll_address(listen: str) -> str:
    """The enrollment port defaults to the events port + 1 (as Wazuh's 1514/1515)."""
    host, _, port = listen.rpartition(":")
    return f"{host}:{int(port) + 1}" if port.isdigit() and int(port) else f"{host}:0"


@dataclass
class Collector:
    config: CollectorConfig
    detector: Detector | None = None
    extra_outputs: list[Output] = field(default_factory=list)
    stopping: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self.data = DataDir(self.config.data_dir)
        self.store = Store(self.data.db)
        self.ca = CertificateAuthority.load(self.data.pki)
        self.outputs: list[Output] = []
        if self.config.archive_enabled:
            self.outputs.append(JsonlArchive(self.data.archive))
        self.outputs.extend(self.extra_outputs)
        self.pipeline = Pipeline([Validate()], detector=self.detector)
        limits = self.config.limits
        self.ingest = IngestService(
            store=self.store, pipeline=self.pipeline, outputs=self.outputs,
            limits=Limits(max_message_bytes=limits.max_message_bytes,
                          max_batch_events=limits.max_batch_events, window=limits.window,
                          events_per_second=limits.events_per_second),
            stopping=self.stopping,
        )
        self.server: grpc.Server | None = None
        self.monitor: Monitor | None = None
        self.port = 0
        self.enroll_port = 0

    def start(self) -> int:
        for output in self.outputs:
            output.connect()
        limits = self.config.limits
        options: list[tuple[str, Any]] = [
            ("grpc.max_receive_message_length", limits.max_message_bytes),
            ("grpc.max_send_message_length", 1024 * 1024),
            ("grpc.keepalive_time_ms", 30_000),
            ("grpc.keepalive_timeout_ms", 10_000),
            ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
            ("grpc.keepalive_permit_without_calls", 1),
        ]
        server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=limits.max_streams + 8,
                                       thread_name_prefix="rpc"),
            options=options, maximum_concurrent_rpcs=limits.max_streams,
        )
        pb_grpc.add_EnrollmentServicer_to_server(
            EnrollmentService(store=self.store, ca=self.ca), server)
        pb_grpc.add_IngestServicer_to_server(self.ingest, server)
        self.port = server.add_secure_port(
            self.config.listen, server_credentials(self.data, require_client_cert=True))
        if self.port == 0:
            raise SisguardError(f"cannot listen on {self.config.listen}")
        enroll_listen = self.config.enroll_listen or enroll_address(self.config.listen)
        self.enroll_port = server.add_secure_port(
            enroll_listen, server_credentials(self.data, require_client_cert=False))
        if self.enroll_port == 0:
            raise SisguardError(f"cannot listen on {enroll_listen} (enrollment)")
        server.start()
        self.server = server
        self.monitor = Monitor(
            store=self.store, emit=self._publish_everywhere,
            detect=self.detector.process if self.detector is not None else None,
            offline_after=self.config.health.offline_after_intervals,
            health=self.health_snapshot, health_path=self.data.health,
        )
        self.monitor.start()
        log.info("collector listening", listen=self.config.listen, port=self.port,
                 enroll_port=self.enroll_port, outputs=[o.name for o in self.outputs])
        return self.port

    def _publish_everywhere(self, records: list[Record]) -> None:
        for output in self.outputs:
            output.publish(records)

    def health_snapshot(self) -> dict[str, Any]:
        ingest = self.ingest
        stats: Any = getattr(self.detector, "stats", None)
        return {
            "listen": self.config.listen, "port": self.port, "enroll_port": self.enroll_port,
            "ingest": {"batches": ingest.batches, "events": ingest.events,
                       "rejected": ingest.rejected, "output_outage_since": ingest.outage_since},
            "pipeline": {name: vars(c) for name, c in self.pipeline.counters.items()},
            "alerts": self.pipeline.alerts, "detection_errors": self.pipeline.detect_errors,
            "detection": stats() if callable(stats) else None,
            "outputs": {o.name: o.health() for o in self.outputs},
        }

    def stop(self, grace: float = 3.0) -> None:
        self.stopping.set()
        if self.monitor is not None:
            self.monitor.stop()
        if self.server is not None:
            self.server.stop(grace).wait()
        for output in self.outputs:
            output.close()
        self.store.close()

    def run_forever(self) -> None:
        serve_until_signalled(self.start, self.stop, log)
