"""Process starts and ends (``sisguard.process``).

Mode ``netlink`` (Linux, root): the kernel's process-events connector reports every exec
and exit as it happens. A reader thread does nothing but receive and, on exec, read
``/proc/PID`` at once (so a process that lives a millisecond is still described); a
worker thread builds and emits the documents (hashing, user names, parent lookup). When
the process is already gone, the document still carries what the kernel said (pid, the
parent from the preceding fork event) and whatever was read. Forked children that never
exec inherit their parent's description, so a shell spawned by a forked web-server
worker still has the right parent.

Mode ``poll`` (not root, not Linux, a container without the connector): compare the pid
list every ``poll_interval``; short-lived processes are missed. The active mode is in the
log and in the heartbeat (``SensorHealth.mode``); why netlink was not possible is
reported as a sensor_error event.

Floods: the connector's receive buffer is sized for bursts (``receive_buffer``, set with
``SO_RCVBUFFORCE`` as root). When the kernel still overruns it (``ENOBUFS``) or the
worker queue is full, ``/proc`` is swept for running processes not reported yet (they
come as starts with ``sisguard.process.found_by: sweep``) and the loss is reported as a
rate-limited sensor_error with the counts (``process_loss.py``).

Executables are hashed through ``/proc/PID/exe``, never by path (``procfs.HashCache``):
the reader thread opens it at once, so the image can still be hashed after the process
is gone; a hash that cannot be taken says why in ``sisguard.process.hash_error``.

``process.entity_id`` is a hash of (boot id, pid, start time in clock ticks), stable for
a process's whole life and unique across reboots.
"""

from __future__ import annotations

import contextlib
import enum
import errno
import hashlib
import pwd
import queue
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from agent.ecs import Document, new_event, timestamp
from agent.platform import ProcessEvents, ProcessTable
from agent.platform.linux.exe_open import LOCAL_FILE_SYSTEMS
from agent.platform.linux.netlink import ConnectorError, ProcConnector, ProcEvent, What
from agent.platform.linux.procfs import ExeHash, HashCache, OpenExe, ProcFS, Snapshot
from agent.sensors.base import Sensor, SensorContext
from agent.sensors.process_loss import LossAccount
from common.logs import get_logger
from common.text import os_text
from common.yamlconf import Duration, Size

log = get_logger("sisguard.agent.process")

DATASET = "sisguard.process"


class Mode(enum.Enum):
    AUTO = "auto"
    NETLINK = "netlink"
    POLL = "poll"


@dataclass(frozen=True)
class ProcessConfig:
    mode: Mode = Mode.AUTO
    poll_interval: Duration = Duration(1.0)
    hash: bool = True
    hash_max_bytes: Size = Size(128 * 1024 * 1024)
    hash_file_systems: tuple[str, ...] = LOCAL_FILE_SYSTEMS  # never FUSE/NFS: reads block
    max_tracked: int = 65536        # pid -> description cache (live processes)
    queue_events: int = 100_000     # reader -> worker
    receive_buffer: Size = Size(32 * 1024 * 1024)  # connector socket (SO_RCVBUFFORCE)
    sweep_interval: Duration = Duration(1.0)       # at most one /proc sweep per ... after a loss
    loss_report_interval: Duration = Duration(5.0)  # at most one loss sensor_error per ...


# at most this many /proc/PID/exe descriptors held between the reader and the worker
OPEN_EXES = 256


@dataclass
class Info:
    """What we know of one live process (the cache entry)."""

    pid: int
    ppid: int | None = None
    executable: str | None = None
    args: list[str] | None = None
    name: str | None = None
    cwd: str | None = None
    uid: int | None = None
    euid: int | None = None
    start_ticks: int | None = None
    entity_id: str = ""
    hash: str | None = None
    hash_error: str | None = None
    found_by: str | None = None     # "sweep": found by a /proc sweep after a loss
    reported: bool = True           # its start was emitted (or it existed when we began)
    extra: dict[str, Any] = field(default_factory=dict)


class ProcessSensor(Sensor):
    name = "process"
    config: ProcessConfig

    def __init__(self, config: ProcessConfig, context: SensorContext, *,
                 procfs: ProcessTable | None = None,
                 connector_factory: Callable[..., ProcessEvents] = ProcConnector,
                 platform: str = sys.platform,
                 user_name: Callable[[int], str | None] | None = None) -> None:
        super().__init__(config, context)
        self.procfs: ProcessTable = procfs or ProcFS()
        self._connector_factory = connector_factory
        self._platform = platform
        self._user_name = user_name or _passwd_name
        self._users: dict[int, str | None] = {}
        self._hashes = HashCache(max_bytes=config.hash_max_bytes, root=self.procfs.root,
                                 file_systems=config.hash_file_systems)
        self._open_exes = threading.BoundedSemaphore(OPEN_EXES)
        self._cache: OrderedDict[int, Info] = OrderedDict()
        self._fork_parent: OrderedDict[int, tuple[int, int]] = OrderedDict()  # pid->(ppid, ns)
        self._inbox: queue.Queue[tuple[ProcEvent, Snapshot | None,
                                       ExeHash | OpenExe | None]] = queue.Queue(
            maxsize=config.queue_events)
        self.loss = LossAccount(context.report_error, sweep_interval=config.sweep_interval,
                                report_interval=config.loss_report_interval)
        # pid -> (start ticks, exe, args) of a start the sweep reported: its exec event,
        # still queued behind the sweep, is then not reported a second time
        self._swept: OrderedDict[int, tuple[int | None, str | None, list[str] | None]] = (
            OrderedDict())
        self._connector: ProcessEvents | None = None
        self._threads: list[threading.Thread] = []
        self._boot_id = self.procfs.boot_id()
        self._boot_time = self.procfs.boot_time()

    # -- lifecycle ---------------------------------------------------------------------
    def start(self) -> None:
        mode = self._choose_mode()
        self.context.health.mode = mode.value
        log.info("process capture", mode=mode.value)
        self._scan_existing()
        if mode is Mode.NETLINK:
            self._threads = [
                threading.Thread(target=self._read_loop, name="process-netlink", daemon=True),
                threading.Thread(target=self._work_loop, name="process-worker", daemon=True)]
        else:
            self._threads = [threading.Thread(target=self._poll_loop, name="process-poll",
                                              daemon=True)]
        for thread in self._threads:
            thread.start()

    def _choose_mode(self) -> Mode:
        if self.config.mode is Mode.POLL:
            return Mode.POLL
        why = ""
        if not self._platform.startswith("linux"):
            why = f"the process connector needs Linux (this is {self._platform})"
        else:
            connector = self._connector_factory(recv_buffer=self.config.receive_buffer)
            try:
                connector.open()
                self._connector = connector
                say = log.info if connector.buffer_option == "SO_RCVBUFFORCE" else log.warning
                say("process connector receive buffer", requested=connector.recv_buffer,
                    granted=connector.granted_buffer, option=connector.buffer_option)
                self.context.health.details = {
                    "receive_buffer": str(connector.granted_buffer)}
                return Mode.NETLINK
            except ConnectorError as e:
                why = f"netlink process connector unavailable: {e.strerror or e}"
            except OSError as e:  # pragma: no cover - anything else from the kernel
                why = f"netlink process connector failed: {e}"
        self.context.report_error(f"{why}; polling every {self.config.poll_interval:g}s "
                                  "(short-lived processes will be missed)",
                                  {"sisguard.mode": "poll"})
        return Mode.POLL

    def join(self, timeout: float | None = None) -> None:
        for thread in self._threads:
            thread.join(timeout)
        if self._connector is not None:
            self._connector.close()

    # -- netlink -----------------------------------------------------------------------
    def _read_loop(self) -> None:
        assert self._connector is not None
        while not self._stop.is_set():
            try:
                events = self._connector.recv()
            except OSError as e:
                if e.errno == errno.ENOBUFS:   # the kernel dropped events: we were too slow
                    self.loss.overrun()
                    self._wake_worker()
                else:                          # not expected: say so, do not spin
                    self.context.health.count_error(f"netlink recv: {e}")
                    self._stop.wait(0.1)
                continue
            for event in events:
                snap = None
                exe: ExeHash | OpenExe | None = None
                if event.what == What.EXEC and event.pid == event.tgid:
                    snap = self.procfs.snapshot(event.tgid)   # now, before it is gone
                    if self.config.hash and self._open_exes.acquire(blocking=False):
                        exe = self._hashes.begin(event.tgid)
                        if not isinstance(exe, OpenExe):
                            self._open_exes.release()
                elif event.what == What.EXIT and event.pid != event.tgid:
                    continue  # a thread ended, not a process
                elif event.what == What.FORK and event.pid != event.tgid:
                    continue  # a new thread
                elif event.what not in (What.EXEC, What.EXIT, What.FORK):
                    continue
                try:
                    self._inbox.put_nowait((event, snap, exe))
                except queue.Full:
                    self._release(exe)
                    self.loss.drop()
        self._inbox.put((ProcEvent(What.NONE, 0, 0, 0), None, None))  # wake the worker

    def _wake_worker(self) -> None:
        with contextlib.suppress(queue.Full):
            self._inbox.put_nowait((ProcEvent(What.NONE, 0, 0, 0), None, None))

    def _release(self, exe: ExeHash | OpenExe | None) -> None:
        if isinstance(exe, OpenExe) and not exe.closed:
            self._hashes.close(exe)
            self._open_exes.release()

    def _work_loop(self) -> None:
        while True:
            try:
                event, snap, exe = self._inbox.get(timeout=self.loss.wait_time())
            except queue.Empty:
                event, snap, exe = ProcEvent(What.NONE, 0, 0, 0), None, None
            if event.what == What.NONE and self._stop.is_set():
                return
            try:
                if event.what != What.NONE:
                    self.handle(event, snap, exe)
                if self.loss.take_sweep():
                    self.loss.swept(self.sweep())
                self.loss.report_if_due()
            except Exception as e:  # a daemon never dies on one bad event
                self.context.health.count_error(f"{type(e).__name__}: {e}")
                log.exception("process event failed", pid=event.tgid)
            finally:
                self._release(exe)   # not hashed (an error, a fork): close it

    def handle(self, event: ProcEvent, snap: Snapshot | None,
               exe: ExeHash | OpenExe | None = None) -> None:
        """Apply one kernel event (public so tests can drive it without a socket).
        ``exe`` is what the reader got from ``/proc/PID/exe`` (None: hash here)."""
        if event.what == What.FORK:
            self._remember(self._fork_parent, event.tgid, (event.parent_tgid, event.timestamp_ns))
            parent = self._cache.get(event.parent_tgid)
            if parent is not None:
                ticks = event.timestamp_ns * self.procfs.clk_tck // 1_000_000_000
                child = replace(parent, pid=event.tgid, ppid=event.parent_tgid,
                                start_ticks=ticks, reported=False, found_by=None,
                                entity_id=self._entity(event.tgid, ticks))
                self._remember(self._cache, event.tgid, child)
        elif event.what == What.EXEC:
            info = self._describe(snap or Snapshot(event.tgid), event, exe=exe)
            swept = self._swept.pop(info.pid, None)
            self._remember(self._cache, info.pid, info)
            if swept is None or not _same_start(swept, snap):
                self.emit(self._document(info, "start"))
        elif event.what == What.EXIT:
            self._fork_parent.pop(event.tgid, None)
            self._swept.pop(event.tgid, None)
            ended = self._cache.pop(event.tgid) if event.tgid in self._cache else None
            if ended is not None and ended.reported:
                code = event.exit_code
                exit_code = (code >> 8) & 0xFF if code & 0x7F == 0 else 128 + (code & 0x7F)
                self.emit(self._document(ended, "end", exit_code=exit_code))

    # -- polling -----------------------------------------------------------------------
    def _poll_loop(self) -> None:
        while not self._stop.wait(self.config.poll_interval):
            try:
                self.poll_once()
            except Exception as e:
                self.context.health.count_error(f"{type(e).__name__}: {e}")
                log.exception("process poll failed")

    def poll_once(self) -> None:
        now_ns = time.monotonic_ns()
        current = set(self.procfs.pids())
        for pid in list(self._cache):
            if pid not in current:
                info = self._cache.pop(pid)
                self.emit(self._document(info, "end"))
        for pid in sorted(current - set(self._cache)):
            try:   # one process that cannot be read costs only itself
                snap = self.procfs.snapshot(pid)
                if snap.ppid is None:
                    continue  # gone already
                info = self._describe(snap, ProcEvent(What.EXEC, now_ns, pid, pid))
                self._remember(self._cache, pid, info)
                self.emit(self._document(info, "start"))
            except Exception as e:
                self.context.report_error(f"cannot describe process {pid}: "
                                          f"{type(e).__name__}: {e}", {"process.pid": pid})
                log.exception("process poll: one process failed", pid=pid)

    def sweep(self) -> int:
        """After a loss: report the running processes not seen yet (and forget the ones
        whose exit was lost). Returns how many starts it reported."""
        found = 0
        current = self.procfs.pids()
        live = set(current)
        for pid in [p for p in self._cache if p not in live]:
            ended = self._cache.pop(pid)
            self._fork_parent.pop(pid, None)
            if ended.reported:
                ended.found_by = "sweep"
                self.emit(self._document(ended, "end"))
        now_ns = time.monotonic_ns()
        for pid in sorted(current):
            try:   # one process that cannot be read costs only itself
                found += self._sweep_one(pid, now_ns)
            except Exception as e:
                self.context.health.count_error(f"sweep pid {pid}: {type(e).__name__}: {e}")
                log.exception("process sweep: one process failed", pid=pid)
        return found

    def _sweep_one(self, pid: int, now_ns: int) -> bool:
        """Report ``pid`` if it is a start not seen yet; True if it was."""
        cached = self._cache.get(pid)
        if cached is not None and cached.reported:
            ticks = self.procfs.start_ticks(pid)
            if ticks is None or cached.start_ticks in (None, ticks):
                return False          # the one we know (or gone meanwhile)
        snap = self.procfs.snapshot(pid)
        if snap.ppid is None:
            return False              # gone already
        parent = self._cache.get(snap.ppid)
        if cached is not None and not cached.reported:
            parent = cached           # a fork we saw: did it exec since?
        if parent is not None and parent.executable == snap.exe and parent.args == snap.args:
            child = self._describe(snap, ProcEvent(What.FORK, now_ns, pid, pid), hash_it=False)
            child.reported = False    # a fork that has not exec'd: not a start
            self._remember(self._cache, pid, child)
            return False
        info = self._describe(snap, ProcEvent(What.EXEC, now_ns, pid, pid))
        info.found_by = "sweep"
        self._remember(self._cache, pid, info)
        self._remember(self._swept, pid, (snap.start_ticks, snap.exe, snap.args))
        self.emit(self._document(info, "start"))
        return True

    def _scan_existing(self) -> None:
        for pid in self.procfs.pids():
            try:
                snap = self.procfs.snapshot(pid)
                if snap.ppid is not None:
                    info = self._describe(snap, ProcEvent(What.EXEC, 0, pid, pid),
                                          hash_it=False)
                    self._remember(self._cache, pid, info)
            except Exception as e:   # one process that cannot be read costs only itself
                self.context.report_error(f"cannot describe process {pid}: "
                                          f"{type(e).__name__}: {e}", {"process.pid": pid})
                log.exception("process scan: one process failed", pid=pid)

    # -- building ----------------------------------------------------------------------
    def _remember(self, cache: OrderedDict[int, Any], key: int, value: Any) -> None:
        cache[key] = value
        cache.move_to_end(key)
        while len(cache) > self.config.max_tracked:
            cache.popitem(last=False)

    def _entity(self, pid: int, ticks: int | None) -> str:
        raw = f"{self._boot_id}:{pid}:{ticks if ticks is not None else 'unknown'}"
        return hashlib.sha256(raw.encode()).hexdigest()[:32]

    def _describe(self, snap: Snapshot, event: ProcEvent, *, hash_it: bool = True,
                  exe: ExeHash | OpenExe | None = None) -> Info:
        ppid = snap.ppid
        ticks = snap.start_ticks
        forked = self._fork_parent.get(snap.pid)
        if ppid is None and forked is not None:
            ppid = forked[0]
        if ticks is None:
            ns = forked[1] if forked is not None else event.timestamp_ns
            ticks = ns * self.procfs.clk_tck // 1_000_000_000 if ns else None
        info = Info(pid=snap.pid, ppid=ppid, executable=snap.exe, args=snap.args,
                    cwd=snap.cwd, uid=snap.uid, euid=snap.euid, start_ticks=ticks,
                    entity_id=self._entity(snap.pid, ticks))
        if snap.exe:
            info.name = snap.exe.rsplit("/", 1)[-1]
        elif snap.comm:
            info.name = snap.comm
        got: ExeHash | None = None
        if isinstance(exe, OpenExe):
            if hash_it:
                self._open_exes.release()
                got = self._hashes.finish(exe)
        else:
            got = exe
        if got is None and hash_it and self.config.hash:
            got = self._hashes.sha256(snap.pid)
        if got is not None:
            info.hash, info.hash_error = got.sha256, got.error
        if snap.exe is None and snap.args is None:
            info.extra["gone"] = True
        return info

    def _user(self, uid: int) -> str | None:
        if uid not in self._users:
            if len(self._users) > 4096:
                self._users.clear()
            self._users[uid] = self._user_name(uid)
        return self._users[uid]

    def _document(self, info: Info, kind: str, *, exit_code: int | None = None) -> Document:
        action = "exec" if kind == "start" else "exit"
        doc = new_event(DATASET, category=["process"], type=[kind], action=action)
        process: dict[str, Any] = {"pid": info.pid, "entity_id": info.entity_id}
        for key, value in (("name", info.name), ("executable", info.executable),
                           ("working_directory", info.cwd)):
            if value is not None:
                process[key] = os_text(value)
        if info.args is not None:
            process["args"] = info.args
            process["args_count"] = len(info.args)
            process["command_line"] = " ".join(info.args)
        if info.start_ticks is not None and self._boot_time:
            process["start"] = timestamp(self._boot_time + info.start_ticks
                                         / self.procfs.clk_tck)
        if info.hash:
            process["hash"] = {"sha256": info.hash}
        if kind == "end":
            process["end"] = doc["@timestamp"]
            if exit_code is not None:
                process["exit_code"] = exit_code
        parent = self._cache.get(info.ppid) if info.ppid is not None else None
        if parent is not None:
            p: dict[str, Any] = {"pid": parent.pid, "entity_id": parent.entity_id}
            if parent.name:
                p["name"] = os_text(parent.name)
            if parent.executable:
                p["executable"] = os_text(parent.executable)
            if parent.args is not None:
                p["command_line"] = " ".join(parent.args)
                p["args"] = parent.args
            process["parent"] = p
        elif info.ppid is not None:
            process["parent"] = {"pid": info.ppid}
        doc["process"] = process
        if info.uid is not None:
            user: dict[str, Any] = {"id": str(info.uid)}
            name = self._user(info.uid)
            if name:
                user["name"] = name
            if info.euid is not None:
                effective: dict[str, Any] = {"id": str(info.euid)}
                ename = self._user(info.euid)
                if ename:
                    effective["name"] = ename
                user["effective"] = effective
            doc["user"] = user
        ours: dict[str, Any] = {}
        if info.extra.get("gone"):
            ours["gone_before_read"] = True
        if info.hash_error and kind == "start":
            ours["hash_error"] = info.hash_error
        if info.found_by:
            ours["found_by"] = info.found_by
        if ours:
            doc["sisguard"] = {"process": ours}
        return doc


def _same_start(swept: tuple[int | None, str | None, list[str] | None],
                snap: Snapshot | None) -> bool:
    """The exec the sweep already reported (or one read too late to tell them apart)."""
    if snap is None or (snap.exe is None and snap.args is None):
        return True
    return swept == (snap.start_ticks, snap.exe, snap.args)


def _passwd_name(uid: int) -> str | None:
    try:
        return os_text(pwd.getpwuid(uid).pw_name)
    except KeyError:
        return None
