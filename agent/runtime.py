"""The running agent: sensors -> bounded queue -> spool writer -> spool -> shipper.

A supervisor starts the sensors, the spool writer and the shipper, sends heartbeats
through the shipper, and stops everything in order on SIGTERM/SIGINT.
"""

from __future__ import annotations

import os
import queue
import socket
import threading
import time
from pathlib import Path
from typing import Any

import psutil

from agent.config import AgentConfig
from agent.ecs import Document, new_event
from agent.identity import Credentials, Identity
from agent.memory import release_heap
from agent.renewal import Renewal
from agent.sensors import REGISTRY, Sensor, SensorContext
from agent.sensors.base import SensorHealth
from agent.sensors.fim_config import FimConfig, with_web_roots
from agent.shipper import Shipper, ShipperSettings
from agent.spool import Spool
from agent.webroots import Discovery, Poller, discover, log_discovery
from common.logs import get_logger
from common.process import serve_until_signalled
from sisguard.v1 import sisguard_pb2 as pb

log = get_logger("sisguard.agent")
# after a burst (a baseline scan, the inventory, a spool drain) glibc keeps the freed heap:
# hand it back once the queue has been quiet for 5 s, at most this often (seconds)
RELEASE_EVERY = 30.0


class Agent:
    def __init__(self, config: AgentConfig, sensor_configs: dict[str, Any]) -> None:
        self.config = config
        self.state_dir = config.state_dir
        self.identity = Identity.load(self.state_dir)
        credentials = Credentials.load(self.state_dir)
        self.spool = Spool(self.state_dir / "spool.db", agent_id=self.identity.agent_id,
                           max_bytes=config.spool.max_bytes,
                           synchronous=config.spool.synchronous.upper())
        self.queue: queue.Queue[Document | None] = queue.Queue(maxsize=config.spool.queue_events)
        self.queue_dropped = 0
        self.health: dict[str, SensorHealth] = {}
        self.sensors: list[Sensor] = []
        self.web: Discovery | None = None   # what the web server configs name
        self._web_poller: Poller | None = None
        self._fim_config: FimConfig | None = sensor_configs.get("fim")  # before discovery
        if self._fim_config is not None and config.web_roots == "auto":
            self.web = discover(config.web_server_configs)
            log_discovery(self.web, reason="start")
            sensor_configs = {**sensor_configs, "fim": with_web_roots(
                self._fim_config, (r.path for r in self.web.roots))}
            self._web_poller = Poller(config.web_server_configs,
                                      float(config.web_roots_poll), self.web,
                                      self._web_changed)
        self._contexts: dict[str, SensorContext] = {}
        self._sensors_lock = threading.Lock()   # the FIM restart on new web roots
        self._closing = False
        for name in config.sensors:
            cls, _ = REGISTRY[name]
            health = SensorHealth(name)
            self.health[name] = health
            context = SensorContext(emit=self._emit, health=health,
                                    state_dir=self.state_dir / "sensors" / name,
                                    report_error=self._report_error(name))
            context.state_dir.mkdir(parents=True, exist_ok=True)
            self._contexts[name] = context
            self.sensors.append(cls(sensor_configs[name], context))
        s = config.shipper
        self.shipper = Shipper(
            spool=self.spool,
            collectors=list(config.collectors or self.identity.collectors),
            credentials=credentials, hostname=socket.gethostname(),
            settings=ShipperSettings(batch_events=s.batch_events, batch_bytes=s.batch_bytes,
                                     linger=s.linger,
                                     window=s.window, backoff_initial=s.backoff_initial,
                                     backoff_max=s.backoff_max,
                                     heartbeat_interval=config.heartbeat_interval),
            heartbeat=self.heartbeat, renewal=Renewal(self.state_dir, credentials),
        )
        self._process = psutil.Process(os.getpid())
        self._process.cpu_percent(None)
        self._stopping = threading.Event()
        self._writer = threading.Thread(target=self._write_loop, name="spool-writer",
                                        daemon=True)

    def _web_changed(self, found: Discovery) -> None:
        """The web server configs changed: FIM restarts on the new set of roots (its
        baseline stays; the restart's reconciliation scan reports what changed)."""
        assert self._fim_config is not None
        self.web = found
        config = with_web_roots(self._fim_config, (r.path for r in found.roots))
        with self._sensors_lock:   # stop() waits for a restart under way
            for i, sensor in enumerate(self.sensors):
                if sensor.name != "fim" or sensor.config == config or self._closing:
                    continue
                sensor.stop()
                sensor.join(timeout=10)
                cls, _ = REGISTRY["fim"]
                self.sensors[i] = replacement = cls(config, self._contexts["fim"])
                replacement.start()
                log.info("fim restarted on the web roots found", roots=len(found.roots))

    # sensors -> queue
    def _emit(self, document: Document) -> None:
        try:
            self.queue.put(document, timeout=2.0)
        except queue.Full:
            self.queue_dropped += 1  # reported by the writer as a spool_dropped event

    def _report_error(self, sensor: str) -> Any:
        def report(message: str, fields: dict[str, Any]) -> None:
            self.health[sensor].count_error(message)
            log.warning(message, sensor=sensor, **fields)
            doc = new_event("sisguard.agent", category=["host"], type=["error"],
                            action="sensor_error")
            doc["error"] = {"message": message}
            doc["message"] = f"sensor {sensor}: {message}"
            doc["sisguard"] = {"sensor": {"name": sensor, **{k.replace(".", "_"): v
                                                              for k, v in fields.items()}}}
            self._emit(doc)
        return report

    # queue -> spool
    def _write_loop(self) -> None:
        trimmed = time.monotonic()
        while True:
            try:
                first = self.queue.get(timeout=5.0)   # stop() wakes it with None
            except queue.Empty:
                first = None
            if first is None:
                if self._stopping.is_set():
                    return
                if time.monotonic() - trimmed > RELEASE_EVERY:   # quiet for a while
                    release_heap(collect=False)
                    trimmed = time.monotonic()
                continue
            docs: list[Document] = [first]
            # Linger a moment so that a trickle of events shares one durable commit
            # instead of paying an fsync each (the main cost of an idle agent).
            deadline = time.monotonic() + self.config.spool.linger
            while len(docs) < 1000:
                try:
                    more = self.queue.get(timeout=max(0.0, deadline - time.monotonic()))
                except queue.Empty:
                    break
                if more is None:   # stop: write these, then meet it again
                    self.queue.put(None)
                    break
                docs.append(more)
            if self.queue_dropped:
                dropped, self.queue_dropped = self.queue_dropped, 0
                notice = new_event("sisguard.agent", category=["host"], type=["info"],
                                   action="spool_dropped")
                notice["message"] = f"sensor queue full: dropped {dropped} events"
                notice["sisguard"] = {"spool": {"dropped": dropped, "where": "queue"}}
                docs.append(notice)
            try:
                self.spool.append(docs)
            except Exception:
                log.exception("spool write failed; retrying", events=len(docs))
                time.sleep(1.0)
                for doc in docs:  # put them back in front of newer ones as far as we can
                    self._emit(doc)

    def heartbeat(self) -> pb.Heartbeat:
        depth = self.spool.depth()
        return pb.Heartbeat(
            time_unix_nano=time.time_ns(), spool_events=depth.events,
            spool_bytes=depth.bytes, spool_dropped=depth.dropped,
            cpu_percent=self._process.cpu_percent(None),
            rss_bytes=self._process.memory_info().rss,
            interval_seconds=int(self.config.heartbeat_interval),
            sensors=[pb.SensorHealth(name=h.name, events=h.events, errors=h.errors,
                                     mode=h.mode, last_error=h.last_error,
                                     details=self._details(h))
                     for h in self.health.values()],
        )

    def _details(self, health: SensorHealth) -> dict[str, str]:
        details = dict(health.details)
        web = self.web
        if health.name == "fim" and web is not None:   # what the web configs named
            details.update(web.details())
        return details

    def start(self) -> None:
        self._writer.start()
        started = new_event("sisguard.agent", category=["host"], type=["start"],
                            action="agent_started")
        started["message"] = "sisguard agent started"
        self._emit(started)
        for sensor in self.sensors:
            sensor.start()
            log.info("sensor started", sensor=sensor.name, mode=self.health[sensor.name].mode)
        self.shipper.start()
        if self._web_poller is not None:
            self._web_poller.start()
        log.info("agent running", agent_id=self.identity.agent_id,
                 collectors=list(self.shipper.collectors), state_dir=str(self.state_dir))

    def stop(self) -> None:
        with self._sensors_lock:
            self._closing = True
        if self._web_poller is not None:
            self._web_poller.stop()
        for sensor in self.sensors:
            sensor.stop()
        for sensor in self.sensors:
            sensor.join(timeout=5)
        stopped = new_event("sisguard.agent", category=["host"], type=["end"],
                            action="agent_stopped")
        stopped["message"] = "sisguard agent stopped"
        self._emit(stopped)
        self._stopping.set()
        self.queue.put(None)   # behind every event still queued
        self._writer.join(timeout=10)
        # give the shipper a moment to send what is left, then stop it
        deadline = time.monotonic() + 2.0
        while self.spool.depth().events and time.monotonic() < deadline:
            time.sleep(0.05)
        self.shipper.stop()
        self.shipper.join(timeout=5)
        self.spool.close()

    def run_forever(self) -> None:
        serve_until_signalled(self.start, self.stop, log)


def state_summary(state_dir: Path) -> dict[str, Any]:
    from agent.spool import read_depth

    identity = Identity.load(state_dir)
    summary: dict[str, Any] = {"agent_id": identity.agent_id,
                               "organization": identity.organization,
                               "collectors": list(identity.collectors),
                               "ca_fingerprint": identity.ca_fingerprint}
    spool = state_dir / "spool.db"
    summary["spool"] = read_depth(spool) if spool.exists() else None
    return summary
