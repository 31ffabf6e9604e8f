"""Listeners, new outbound destinations and accepted connections (``sisguard.network``).

Every ``poll_interval`` (default 2 s) the sensor reads the socket table: through
``NETLINK_SOCK_DIAG`` (``sock_diag.py``: the kernel filters by state, no text to parse),
or, where netlink is refused (a seccomp sandbox, gVisor, a kernel without inet_diag:
health says ``mode: procfs-poll`` and why), from ``/proc/net/{tcp,tcp6,udp,udp6}``. At
most ``max_sockets`` are read per poll; when that bound cuts the table, a health event
says so. Then it compares:

* listeners (TCP ``LISTEN``; UDP bound and unconnected) with the last poll: each new one
  is ``listen_opened``, each gone ``listen_closed``. The set is saved in ``state_dir``, so
  a restart reports only what changed meanwhile; the very first run reports every
  listener once (``sisguard.network.initial: true``).
* outbound connections (TCP ``ESTABLISHED``/``SYN_SENT`` and connected UDP whose local port
  is not one we listen on) with the set of (transport, address, port) already seen on this
  host: each new destination is one ``outbound_connection``. The seen set is an LRU of at
  most ``seen_max`` entries (saved on stop and at most once a minute).
* accepted connections from a remote address to a local TCP listener
  (``network_inbound.py``): each new one is ``connection_accepted``
  (``network.direction: ingress``), at most ``inbound_burst`` per (source address, local
  port) per ``inbound_window``; the next one says how many were suppressed.

Only when something new shows up are the owning processes found, by one scan of
``/proc/PID/fd`` for the socket inodes. Why 2 s: a listener is reported within 2 s and any
connection that lasts 2 s is caught, while an idle poll costs one netlink dump per table.
Connections shorter than the interval can be missed.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from agent.ecs import Document, new_event
from agent.platform import ProcessTable
from agent.platform.linux.procfs import ProcFS, parse_table, read_sockets
from agent.platform.linux.sock_diag import (
    TCP_CLOSE,
    TCP_ESTABLISHED,
    TCP_LISTEN,
    TCP_SYN_SENT,
    Dump,
    SockDiag,
    SockDiagError,
    Socket,
)
from agent.sensors.base import Sensor, SensorContext
from agent.sensors.network_inbound import InboundTracker, RateLimit, is_loopback
from agent.timer import Job
from common.logs import get_logger
from common.text import is_valid_text, os_text
from common.yamlconf import Duration

log = get_logger("sisguard.agent.network")

DATASET = "sisguard.network"


@dataclass(frozen=True)
class NetworkConfig:
    poll_interval: Duration = Duration(2.0)
    listeners: bool = True
    outbound: bool = True
    udp: bool = True
    include_loopback: bool = False   # outbound connections to 127.0.0.0/8 and ::1
    seen_max: int = 10_000           # outbound destinations remembered (LRU)
    inbound: bool = True             # accepted connections from remote addresses
    inbound_burst: int = 5           # events per (source address, local port) ...
    inbound_window: Duration = Duration(60.0)   # ... in this window; the rest counted
    max_sockets: int = 20_000        # sockets read per poll (a local user can open more)
    sock_diag: bool = True           # netlink first; False: /proc/net only


__all__ = ["NetworkConfig", "NetworkSensor", "Socket", "parse_table", "read_sockets"]


def find_owners(inodes: set[int], procfs: ProcessTable) -> dict[int, int]:
    """socket inode -> pid, by one scan of /proc/PID/fd (stops when all are found)."""
    owners: dict[int, int] = {}
    wanted = {f"socket:[{i}]": i for i in inodes}
    for pid in procfs.pids():
        fd_dir = f"{procfs.root}/{pid}/fd"
        try:
            fds = os.listdir(fd_dir)
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.readlink(f"{fd_dir}/{fd}")
            except OSError:
                continue
            inode = wanted.get(target)
            if inode is not None and inode not in owners:
                owners[inode] = pid
        if len(owners) == len(wanted):
            break
    return owners


def _listener_key(s: Socket) -> str:
    return f"{s.transport}|{s.local_ip}|{s.local_port}"


def _is_listener(s: Socket) -> bool:
    if s.transport == "tcp":
        return s.state == TCP_LISTEN
    return s.state == TCP_CLOSE and s.remote_port == 0 and s.local_port != 0


class NetworkSensor(Sensor):
    name = "network"
    config: NetworkConfig

    def __init__(self, config: NetworkConfig, context: SensorContext, *,
                 procfs: ProcessTable | None = None,
                 sockets: Callable[[], Iterable[Socket]] | None = None,
                 sock_diag: SockDiag | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(config, context)
        self.procfs: ProcessTable = procfs or ProcFS()
        self._given = sockets
        self._diag = (sock_diag or SockDiag(max_sockets=config.max_sockets)
                      if config.sock_diag and sockets is None else None)
        self._clock = clock
        self._inbound = InboundTracker(include_loopback=config.include_loopback)
        self._limit = RateLimit(burst=max(1, config.inbound_burst),
                                window=max(0.001, float(config.inbound_window)), clock=clock)
        self._truncated = False
        self._unchanged = False   # the last read was the table of the read before
        self._settled = False     # the poll before it went to its end (nothing pending)
        self._state_path = context.state_dir / "network.json"
        self._listeners: dict[str, dict[str, Any]] = {}
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._first_run = True
        self._dirty_since: float | None = None
        self._job: Job | None = None
        context.health.mode = "sock_diag" if self._diag is not None else "procfs-poll"
        self._load()

    def _load(self) -> None:
        try:
            data = json.loads(self._state_path.read_text())
        except (OSError, ValueError):
            return
        self._first_run = False
        self._listeners = dict(data.get("listeners", {}))
        for key in data.get("seen", [])[-self.config.seen_max:]:
            self._seen[str(key)] = None

    def _save(self) -> None:
        tmp = self._state_path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"listeners": self._listeners, "seen": list(self._seen)}))
        os.replace(tmp, self._state_path)
        self._dirty_since = None

    def start(self) -> None:
        """The poll runs on the agent's timer thread (agent/timer.py), now and every
        ``poll_interval``."""
        self._job = self.context.timer.every(float(self.config.poll_interval), self._tick,
                                             name="network")

    def stop(self) -> None:
        super().stop()
        if self._job is not None:
            self._job.cancel(timeout=0)

    def join(self, timeout: float | None = None) -> None:
        job, self._job = self._job, None
        if job is None or not job.cancel(timeout):
            return   # not started, joined already, or a poll still running: no save
        try:
            self._save()
        except OSError as e:
            self.context.report_error(f"cannot save network state: {e}", {})

    def _tick(self) -> None:
        try:
            self.poll_once()
        except PermissionError as e:
            self.context.report_error(f"cannot read sockets: {e}", {})
        except Exception as e:  # a daemon never dies on one bad poll
            self.context.health.count_error(f"{type(e).__name__}: {e}")
            log.exception("network poll failed")

    def _read(self) -> list[Socket]:
        """One socket table: from the callable given, sock_diag, or /proc/net."""
        self._unchanged = False
        if self._given is not None:
            return list(self._given())
        dump: Dump | None = None
        if self._diag is not None:
            try:
                dump = self._diag.dump(udp=self.config.udp)
            except SockDiagError as e:
                self._diag = None
                self.context.health.mode = "procfs-poll"
                self.context.health.details["fallback"] = f"sock_diag refused: {e}"[:200]
                log.warning("network: sock_diag refused, reading /proc/net", error=str(e))
        if dump is None:
            dump = read_sockets(self.procfs.root, udp=self.config.udp,
                                max_sockets=self.config.max_sockets)
        if dump.malformed:
            self.context.health.count_error(f"sock_diag: {dump.malformed} malformed replies")
        if dump.truncated and not self._truncated:
            self.context.report_error(
                f"socket table cut at max_sockets ({self.config.max_sockets}): sockets "
                "past it are not seen this poll",
                {"reason": "socket_table_cut", "max_sockets": self.config.max_sockets})
        self._truncated = dump.truncated
        self._unchanged = dump.unchanged
        self.context.health.details["sockets"] = (
            f"{len(dump.sockets)}{' (cut)' if dump.truncated else ''}")
        return dump.sockets

    def poll_once(self) -> None:
        sockets = self._read()
        if self._unchanged and self._settled:   # nothing opened, closed or new
            self._save_if_due()
            return
        self._settled = False
        listeners = {(_listener_key(s)): s for s in sockets
                     if self.config.listeners and _is_listener(s)}
        listen_ports = {(s.transport, s.local_port) for s in sockets if _is_listener(s)}
        opened = [s for key, s in listeners.items() if key not in self._listeners]
        closed = [key for key in self._listeners if key not in listeners]
        new_out: list[Socket] = []
        if self.config.outbound:
            for s in sockets:
                if not self._is_outbound(s, listen_ports):
                    continue
                key = f"{s.transport}|{s.remote_ip}|{s.remote_port}"
                if key in self._seen:
                    self._seen.move_to_end(key)
                    continue
                self._seen[key] = None
                if len(self._seen) > self.config.seen_max:
                    self._seen.popitem(last=False)
                new_out.append(s)
        accepted = self._accepted(sockets) if self.config.inbound else []
        owners = find_owners({s.inode for s in [*opened, *new_out] if s.inode}
                             | {s.inode for s, _, _ in accepted},
                             self.procfs) if (opened or new_out or accepted) else {}
        # each socket is guarded on its own: one that cannot be described costs only itself
        for s in opened:
            with self._one_item(f"listener {s.local_ip}:{s.local_port}"):
                owner = self._owner(s, owners)
                self._listeners[_listener_key(s)] = {"socket": s.__dict__, "owner": owner}
                self._emit_listen(s, owner, opened=True)
        for key in closed:
            with self._one_item(f"listener {key}"):
                entry = self._listeners.pop(key)
                self._emit_listen(Socket(**entry["socket"]), entry.get("owner") or {},
                                  opened=False)
        for s in new_out:
            with self._one_item(f"connection {s.remote_ip}:{s.remote_port}"):
                self._emit_outbound(s, self._owner(s, owners))
        for s, listener, suppressed in accepted:
            with self._one_item(f"connection from {s.remote_ip}:{s.remote_port}"):
                owner = self._owner(s, owners)
                if "pid" not in owner:   # not found (gone): the listener's owner
                    saved = self._listeners.get(_listener_key(listener), {})
                    owner = {**(saved.get("owner") or {}), "uid": s.uid}
                self._emit_accepted(s, owner, suppressed)
        self._first_run = False
        self._inbound.commit()
        self._settled = True
        if opened or closed:
            self._save()
        elif new_out and self._dirty_since is None:
            self._dirty_since = self._clock()
        self._save_if_due()

    def _save_if_due(self) -> None:
        if self._dirty_since is not None and self._clock() - self._dirty_since > 60:
            self._save()

    def _is_outbound(self, s: Socket, listen_ports: set[tuple[str, int]]) -> bool:
        if s.transport == "tcp" and s.state not in (TCP_ESTABLISHED, TCP_SYN_SENT):
            return False
        if s.transport == "udp" and s.state != TCP_ESTABLISHED:
            return False
        if s.remote_port == 0 or (s.transport, s.local_port) in listen_ports:
            return False
        return self.config.include_loopback or not is_loopback(s.remote_ip)

    def _accepted(self, sockets: list[Socket]) -> list[tuple[Socket, Socket, int]]:
        """New accepted connections within the rate limit, each with its listener and
        how many of its key were suppressed before it."""
        passed: list[tuple[Socket, Socket, int]] = []
        for s, listener in self._inbound.new(sockets):
            allowed, suppressed = self._limit.allow((s.remote_ip, s.local_port))
            if allowed:
                passed.append((s, listener, suppressed))
        if self._limit.suppressed_total:
            self.context.health.details["inbound_suppressed"] = (
                f"{self._limit.suppressed_total} (forgotten keys: "
                f"{self._limit.evicted_suppressed})")
        return passed

    def _owner(self, s: Socket, owners: dict[int, int]) -> dict[str, Any]:
        owner: dict[str, Any] = {"uid": s.uid}
        pid = owners.get(s.inode)
        if pid is not None:
            snap = self.procfs.snapshot(pid)
            owner["pid"] = pid
            if snap.exe:   # an OS string: made valid text here (args, comm already are)
                owner["executable"] = os_text(snap.exe)
                owner["name"] = os_text(snap.exe.rsplit("/", 1)[-1])
            elif snap.comm:
                owner["name"] = snap.comm
            if snap.args:
                owner["command_line"] = " ".join(snap.args)
        return owner

    @contextlib.contextmanager
    def _one_item(self, what: str) -> Iterator[None]:
        try:
            yield
        except Exception as e:
            self.context.report_error(f"cannot describe {what}: {type(e).__name__}: {e}",
                                      {"sisguard.network.item": what})
            log.exception("network: one socket failed", socket=what)

    @staticmethod
    def _with_owner(doc: Document, s: Socket, owner: dict[str, Any]) -> Document:
        # an owner saved by an older agent may hold raw OS text: made valid, never twice
        process = {k: (v if not isinstance(v, str) or is_valid_text(v) else os_text(v))
                   for k, v in owner.items()
                   if k in ("pid", "name", "executable", "command_line")}
        if process:
            doc["process"] = process
        doc["user"] = {"id": str(owner.get("uid", s.uid))}
        return doc

    def _emit_listen(self, s: Socket, owner: dict[str, Any], *, opened: bool) -> None:
        action = "listen_opened" if opened else "listen_closed"
        doc = new_event(DATASET, category=["network"], type=["start" if opened else "end"],
                        action=action)
        doc["server"] = {"ip": s.local_ip, "port": s.local_port}
        doc["network"] = {"transport": s.transport, "type": s.family}
        if opened and self._first_run:
            doc["sisguard"] = {"network": {"initial": True}}
        who = owner.get("name") or "unknown process"
        doc["message"] = (f"{who} {'listens' if opened else 'stopped listening'} on "
                          f"{s.transport} {s.local_ip}:{s.local_port}")
        self.emit(self._with_owner(doc, s, owner))

    def _emit_outbound(self, s: Socket, owner: dict[str, Any]) -> None:
        doc = new_event(DATASET, category=["network"], type=["connection", "start"],
                        action="outbound_connection")
        doc["source"] = {"ip": s.local_ip, "port": s.local_port}
        doc["destination"] = {"ip": s.remote_ip, "port": s.remote_port}
        doc["network"] = {"transport": s.transport, "type": s.family, "direction": "egress"}
        who = owner.get("name") or "unknown process"
        doc["message"] = (f"{who} connected to {s.transport} {s.remote_ip}:{s.remote_port} "
                          "(first time on this host)")
        self.emit(self._with_owner(doc, s, owner))

    def _emit_accepted(self, s: Socket, owner: dict[str, Any], suppressed: int) -> None:
        doc = new_event(DATASET, category=["network"], type=["connection", "start"],
                        action="connection_accepted")
        doc["source"] = {"ip": s.remote_ip, "port": s.remote_port}
        doc["destination"] = {"ip": s.local_ip, "port": s.local_port}
        doc["network"] = {"transport": s.transport, "type": s.family, "direction": "ingress"}
        if suppressed:
            doc["sisguard"] = {"network": {"suppressed": suppressed}}
        who = owner.get("name") or "unknown process"
        more = f" ({suppressed} more from it suppressed before)" if suppressed else ""
        doc["message"] = (f"{who} accepted a {s.transport} connection from "
                          f"{s.remote_ip}:{s.remote_port} on {s.local_ip}:{s.local_port}{more}")
        self.emit(self._with_owner(doc, s, owner))
