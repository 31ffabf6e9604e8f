"""The running agent: sensors -> bounded queue -> spool writer -> spool -> shipper.

A supervisor starts the sensors, the spool writer and the shipper, sends heartbeats
through the shipper, and stops everything in order on SIGTERM/SIGINT.
"""

from __future__ import annotations

import contextlib
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
from agent.sensors import sensor_class
from agent.sensors.base import Sensor, SensorContext, SensorHealth
from agent.sensors.fim.config import FimConfig, with_web_roots
from agent.sensors.weblog import WebLogSensor, discovered_paths
from agent.shipper import Shipper, ShipperSettings
from agent.spool import Spool
from agent.status import STATUS_EVERY, StatusWriter, iso, read_status
from agent.timer import Timer
from agent.webroots import Discovery, Poller, discover, log_discovery
from common.logs import get_logger
from common.process import serve_until_signalled
from common.text import is_valid_text, os_text
from sisguard.v1 import sisguard_pb2 as pb

log = get_logger("sisguard.agent")
# after a burst (a baseline scan, the inventory, a spool drain) glibc keeps the freed heap:
# hand it back once the queue has been quiet for 5 s, at most this often (seconds)
RELEASE_EVERY = 30.0
# stop() ends within this many seconds (below common.process.STOP_TIMEOUT)
STOP_BUDGET = 6.5


class Agent:
    def __init__(self, config: AgentConfig, sensor_configs: dict[str, Any]) -> None:
        self.config = config
        self.state_dir = config.state_dir
        self.identity = Identity.load(self.state_dir)
        credentials = Credentials.load(self.state_dir)
        self.spool = Spool(self.state_dir / "spool.db", agent_id=self.identity.agent_id,
                           max_bytes=config.spool.max_bytes,
                           synchronous=config.spool.synchronous.upper(),
                           on_replaced=self._on_replaced)
        self.queue: queue.Queue[Document | None] = queue.Queue(maxsize=config.spool.queue_events)
        self.queue_dropped = 0
        self.write_lost = 0   # refused by the spool database, not yet reported
        self.write_error = ""
        # documents emitted, and those the spool has taken (or that were counted as
        # dropped): sync() waits for the second to reach the first
        self._emitted = 0
        self._settled = 0
        self._settle = threading.Condition()
        self.health: dict[str, SensorHealth] = {}
        # one thread for every periodic job: sensor polls, the config re-read, the status
        self.timer = Timer(name="agent-timer")
        self.sensors: list[Sensor] = []
        self.web: Discovery | None = None   # what the web server configs name
        self._web_poller: Poller | None = None
        self._fim_config: FimConfig | None = sensor_configs.get("fim")  # before discovery
        if config.web_roots == "auto" and ("fim" in sensor_configs
                                           or "weblog" in sensor_configs):
            self.web = discover(config.web_server_configs)
            log_discovery(self.web, reason="start")
            if self._fim_config is not None:
                sensor_configs = {**sensor_configs, "fim": with_web_roots(
                    self._fim_config, (r.path for r in self.web.roots))}
            self._web_poller = Poller(config.web_server_configs,
                                      float(config.web_roots_poll), self.web,
                                      self._web_changed, timer=self.timer)
        self._contexts: dict[str, SensorContext] = {}
        self._sensors_lock = threading.Lock()   # the FIM restart on new web roots
        self._closing = False
        for name in config.sensors:
            cls = sensor_class(name)
            health = SensorHealth(name)
            self.health[name] = health
            context = SensorContext(emit=self._emit, health=health,
                                    state_dir=self.state_dir / "sensors" / name,
                                    report_error=self._report_error(name),
                                    sync=self.sync, timer=self.timer)
            context.state_dir.mkdir(parents=True, exist_ok=True)
            self._contexts[name] = context
            self.sensors.append(cls(sensor_configs[name], context))
        if self.web is not None:
            self._follow_web_logs(self.web)
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
        self.status = StatusWriter(self.state_dir, self.status_report,
                                   period=min(STATUS_EVERY, config.heartbeat_interval),
                                   timer=self.timer)

    def _web_changed(self, found: Discovery) -> None:
        """The web server configs changed: FIM restarts on the new set of roots (its
        baseline stays; the restart's reconciliation scan reports what changed)."""
        self.web = found
        self._follow_web_logs(found)
        if self._fim_config is None:
            return
        config = with_web_roots(self._fim_config, (r.path for r in found.roots))
        with self._sensors_lock:   # stop() waits for a restart under way
            for i, sensor in enumerate(self.sensors):
                if sensor.name != "fim" or sensor.config == config or self._closing:
                    continue
                sensor.stop()
                sensor.join(timeout=10)
                cls = sensor_class("fim")
                self.sensors[i] = replacement = cls(config, self._contexts["fim"])
                replacement.start()
                log.info("fim restarted on the web roots found", roots=len(found.roots))

    def _follow_web_logs(self, found: Discovery) -> None:
        """The access and error logs the web server configs name: followed by the weblog
        sensor when it runs (a log it follows already, configured or found, is kept)."""
        for sensor in self.sensors:
            if isinstance(sensor, WebLogSensor):
                sensor.add_logs(discovered_paths(found.logs, found.roots))

    # sensors -> queue
    def _emit(self, document: Document, timeout: float = 2.0) -> None:
        with self._settle:
            self._emitted += 1
        try:
            self.queue.put(document, timeout=timeout)
        except queue.Full:
            self.queue_dropped += 1  # reported by the writer as a spool_dropped event
            self._settled_add(1)

    def _settled_add(self, n: int) -> None:
        with self._settle:
            self._settled += n
            self._settle.notify_all()

    def sync(self, timeout: float) -> bool:
        """Wait until every document emitted before this call is in the spool (or was
        counted as dropped); False if that took longer than ``timeout`` seconds."""
        with self._settle:
            target = self._emitted
            return self._settle.wait_for(lambda: self._settled >= target, timeout)

    def _report_error(self, sensor: str) -> Any:
        def report(message: str, fields: dict[str, Any]) -> None:
            self.health[sensor].count_error(message)
            log.warning(message, sensor=sensor, **fields)
            doc = new_event("sisguard.agent", category=["host"], type=["error"],
                            action="sensor_error")
            # raw OS text in a message or field is escaped; text already valid is kept
            text = _text(message)
            doc["error"] = {"message": text}
            doc["message"] = f"sensor {sensor}: {text}"
            doc["sisguard"] = {"sensor": {"name": sensor, **{
                _text(k).replace(".", "_"): _text(v) if isinstance(v, str) else
                (os_text(v) if isinstance(v, bytes) else v)
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
            docs: list[Document] = [first]   # taken from the queue: len(docs) below
            # Linger a moment so that a trickle of events shares one durable commit
            # instead of paying an fsync each (the main cost of an idle agent). The
            # linger is a sleep that puts do not interrupt (a get with a timeout woke
            # once per event: 3 wakeups an event); a full batch waiting goes at once.
            if self.queue.qsize() < 999 and self.config.spool.linger > 0:
                self._stopping.wait(self.config.spool.linger)
            while len(docs) < 1000:
                try:
                    more = self.queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:   # stop: write these, then meet it again
                    self.queue.put(None)
                    break
                docs.append(more)
            taken = len(docs)
            if self.queue_dropped:
                dropped, self.queue_dropped = self.queue_dropped, 0
                notice = new_event("sisguard.agent", category=["host"], type=["info"],
                                   action="spool_dropped")
                notice["message"] = f"sensor queue full: dropped {dropped} events"
                notice["sisguard"] = {"spool": {"dropped": dropped, "where": "queue"}}
                docs.append(notice)
            if self.write_lost:   # batches the spool database refused
                lost, self.write_lost = self.write_lost, 0
                notice = new_event("sisguard.agent", category=["host"], type=["error"],
                                   action="spool_dropped")
                notice["message"] = (f"spool write failed: dropped {lost} events "
                                     f"({_text(self.write_error)})")
                notice["error"] = {"message": _text(self.write_error)[:500]}
                notice["sisguard"] = {"spool": {"dropped": lost, "where": "write"}}
                docs.append(notice)
            self._store(docs)
            self._settled_add(taken)   # stored, or counted as lost: sync() may go on

    def _store(self, docs: list[Document]) -> None:
        """Append to the spool. A document that cannot be encoded is replaced there by a
        sensor_error (it costs only itself). If the database itself refuses the batch
        (locked, disk full, I/O error: nothing a document can cause), it gets one more
        try, then the batch is counted as lost and said so in a spool_dropped event
        (``where: write``) with the next batch that is stored: never put back in the
        queue to fail again forever, never a writer that stalls the sensors for good."""
        for attempt in range(2):
            try:
                self.spool.append(docs)
                return
            except Exception as e:
                error = f"{type(e).__name__}: {e}"
                log.warning("spool write failed", events=len(docs), attempt=attempt + 1,
                            error=error)
            if attempt == 0 and self._stopping.wait(0.5):
                break
        lost = sum(1 + _loss_of(doc) for doc in docs)
        self.write_lost += lost
        self.write_error = error
        log.error("spool refused a batch; dropped", events=lost, error=error)

    def _on_replaced(self, replacement: Document) -> None:
        """The spool stored a sensor_error in place of a document: count it as the
        sensor's error, and log it."""
        sensor = replacement["sisguard"]["sensor"]
        health = self.health.get(sensor["name"])
        if health is not None:
            health.count_error(replacement["message"])
        log.warning("document replaced by a sensor_error", sensor=sensor["name"],
                    field=sensor["field"], reason=replacement["error"]["message"])

    def heartbeat(self) -> pb.Heartbeat:
        depth = self.spool.depth()
        return pb.Heartbeat(
            time_unix_nano=time.time_ns(), spool_events=depth.events,
            spool_bytes=depth.bytes, spool_dropped=depth.dropped,
            cpu_percent=self._process.cpu_percent(None),
            rss_bytes=self._process.memory_info().rss,
            interval_seconds=int(self.config.heartbeat_interval),
            # valid text whatever a sensor put there: protobuf refuses a lone surrogate,
            # and a heartbeat that cannot be built would break every stream
            sensors=[pb.SensorHealth(name=h.name, events=h.events, errors=h.errors,
                                     mode=_text(h.mode), last_error=_text(h.last_error),
                                     details={_text(k): _text(v)
                                              for k, v in list(self._details(h).items())[:64]})
                     for h in self.health.values()],
        )

    def status_report(self) -> dict[str, Any]:
        """What ``sisguard-agent status`` shows of the running agent (agent/status.py)."""
        depth = self.spool.depth()
        oldest = self.spool.read_after(0, limit=1, max_bytes=1)
        age = (round(max(0.0, time.time() - oldest[0].time_ns / 1e9), 1) if oldest
               else None)
        stats = self.shipper.stats
        sensors = []
        for h in self.health.values():
            with h.lock:
                sensors.append({"name": h.name, "mode": h.mode, "events": h.events,
                                "errors": h.errors, "last_error": h.last_error,
                                "details": dict(h.details)})
        return {
            "agent_id": self.identity.agent_id,
            "collector": stats.connected_to or None,
            "last_ack": iso(stats.last_ack_unix) if stats.last_ack_unix else None,
            "last_error": stats.last_error, "connects": stats.connects,
            "events_acked": stats.events_acked, "events_rejected": stats.events_rejected,
            "spool": {"events": depth.events, "bytes": depth.bytes, "dropped": depth.dropped,
                      "last_seq": depth.last_seq, "oldest_unacked_age_seconds": age},
            "interval_seconds": self.config.heartbeat_interval,
            "sensors": sensors,
        }

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
        self.status.start()
        if self._web_poller is not None:
            self._web_poller.start()
        log.info("agent running", agent_id=self.identity.agent_id,
                 collectors=list(self.shipper.collectors), state_dir=str(self.state_dir))

    def stop(self) -> None:
        """Stop in order within ``STOP_BUDGET`` seconds in all (the process ends itself
        a little later whatever hangs: see ``common.process``)."""
        deadline = time.monotonic() + STOP_BUDGET

        def left(share: float) -> float:
            return max(0.0, min(share, deadline - time.monotonic()))

        self.status.stop()
        self.status.join(timeout=left(1.0))
        with contextlib.suppress(OSError):
            (self.state_dir / "status.json").unlink()   # not running: no status
        with self._sensors_lock:
            self._closing = True
        if self._web_poller is not None:
            self._web_poller.stop()
        for sensor in self.sensors:
            sensor.stop()
        for sensor in self.sensors:
            sensor.join(timeout=left(2.5))
        self.timer.stop()
        self.timer.join(timeout=left(0.5))
        stopped = new_event("sisguard.agent", category=["host"], type=["end"],
                            action="agent_stopped")
        stopped["message"] = "sisguard agent stopped"
        self._emit(stopped, timeout=0.5)
        self._stopping.set()
        with contextlib.suppress(queue.Full):   # else the writer sees _stopping in 5 s
            self.queue.put(None, timeout=0.5)   # behind every event still queued
        self._writer.join(timeout=left(3.0))
        # give the shipper a moment to send what is left, then stop it
        send_until = time.monotonic() + left(1.5)
        while self.spool.depth().events and time.monotonic() < send_until:
            time.sleep(0.05)
        self.shipper.stop()
        self.shipper.join(timeout=left(1.0))
        if not self._writer.is_alive():
            self.spool.close()

    def run_forever(self) -> None:
        serve_until_signalled(self.start, self.stop, log)


def _loss_of(doc: Any) -> int:
    """The losses a refused document was itself reporting (a spool_dropped notice)."""
    event = doc.get("event") if isinstance(doc, dict) else None
    if isinstance(event, dict) and event.get("action") == "spool_dropped":
        spool = doc.get("sisguard", {}).get("spool", {})
        if isinstance(spool, dict) and isinstance(spool.get("dropped"), int):
            return int(spool["dropped"])
    return 0


def _text(value: object) -> str:
    text = str(value)
    return text if is_valid_text(text) else os_text(text)


def state_summary(state_dir: Path) -> dict[str, Any]:
    from agent.spool import read_depth

    identity = Identity.load(state_dir)
    summary: dict[str, Any] = {"agent_id": identity.agent_id,
                               "organization": identity.organization,
                               "collectors": list(identity.collectors),
                               "ca_fingerprint": identity.ca_fingerprint}
    spool = state_dir / "spool.db"
    summary["spool"] = read_depth(spool) if spool.exists() else None
    # the running agent's own report (agent/status.py); null when it is not running
    summary["running"] = read_status(state_dir)
    return summary
