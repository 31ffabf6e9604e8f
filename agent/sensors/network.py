"""Listening sockets and new outbound destinations (``sisguard.network``).

Every ``poll_interval`` (default 2 s) the sensor reads ``/proc/net/{tcp,tcp6,udp,udp6}``
(one read per table, cost proportional to the number of sockets, no per-process work)
and compares:

* listeners (TCP ``LISTEN``; UDP bound and unconnected) with the last poll: each new one
  is ``listen_opened``, each gone ``listen_closed``. The set is saved in ``state_dir``, so
  a restart reports only what changed meanwhile; the very first run reports every
  listener once (``sisguard.network.initial: true``).
* outbound connections (TCP ``ESTABLISHED``/``SYN_SENT`` and connected UDP whose local port
  is not one we listen on) with the set of (transport, address, port) already seen on this
  host: each new destination is one ``outbound_connection``. The seen set is an LRU of at
  most ``seen_max`` entries (saved on stop and at most once a minute).

Only when something new shows up are the owning processes found, by one scan of
``/proc/PID/fd`` for the socket inodes. Why 2 s: a listener is reported within 2 s and any
connection that lasts 2 s is caught, while an idle poll costs four small file reads.
Connections shorter than the interval can be missed (an inet_diag subscription would not
miss them; not done yet).
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from agent.ecs import Document, new_event
from agent.platform import ProcessTable
from agent.platform.linux.procfs import ProcFS
from agent.sensors.base import Sensor, SensorContext
from common.logs import get_logger
from common.text import is_valid_text, os_text
from common.yamlconf import Duration

log = get_logger("sisguard.agent.network")

DATASET = "sisguard.network"
TCP_ESTABLISHED, TCP_SYN_SENT, TCP_CLOSE, TCP_LISTEN = 0x01, 0x02, 0x07, 0x0A
TABLES = (("tcp", "ipv4", "tcp"), ("tcp", "ipv6", "tcp6"),
          ("udp", "ipv4", "udp"), ("udp", "ipv6", "udp6"))


@dataclass(frozen=True)
class NetworkConfig:
    poll_interval: Duration = Duration(2.0)
    listeners: bool = True
    outbound: bool = True
    udp: bool = True
    include_loopback: bool = False   # outbound connections to 127.0.0.0/8 and ::1
    seen_max: int = 10_000           # outbound destinations remembered (LRU)


@dataclass(frozen=True)
class Socket:
    transport: str       # tcp / udp
    family: str          # ipv4 / ipv6
    local_ip: str
    local_port: int
    remote_ip: str
    remote_port: int
    state: int
    uid: int
    inode: int


def _addr(text: str) -> tuple[str, int]:
    """``0100007F:1F90`` -> ("127.0.0.1", 8080); IPv6 is four little-endian words."""
    host, port = text.split(":")
    raw = bytes.fromhex(host)
    raw = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
    ip = ipaddress.ip_address(raw)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped), int(port, 16)
    return str(ip), int(port, 16)


def parse_table(text: str, transport: str, family: str) -> list[Socket]:
    """Parse one ``/proc/net/{tcp,udp}[6]`` table."""
    sockets = []
    for line in text.splitlines()[1:]:
        parts = line.split()
        if len(parts) < 10:
            continue
        try:
            lip, lport = _addr(parts[1])
            rip, rport = _addr(parts[2])
            sockets.append(Socket(transport, family, lip, lport, rip, rport, int(parts[3], 16),
                                  int(parts[7]), int(parts[9])))
        except ValueError:
            continue
    return sockets


def read_sockets(root: str = "/proc", *, udp: bool = True) -> list[Socket]:
    sockets: list[Socket] = []
    for transport, family, table in TABLES:
        if transport == "udp" and not udp:
            continue
        try:
            with open(f"{root}/net/{table}") as f:
                sockets.extend(parse_table(f.read(), transport, family))
        except OSError:
            continue
    return sockets


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


def _loopback(ip: str) -> bool:
    try:
        return ipaddress.ip_address(ip).is_loopback
    except ValueError:
        return False


class NetworkSensor(Sensor):
    name = "network"
    config: NetworkConfig

    def __init__(self, config: NetworkConfig, context: SensorContext, *,
                 procfs: ProcessTable | None = None,
                 sockets: Callable[[], Iterable[Socket]] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(config, context)
        self.procfs: ProcessTable = procfs or ProcFS()
        self._sockets = sockets or (lambda: read_sockets(self.procfs.root, udp=config.udp))
        self._clock = clock
        self._state_path = context.state_dir / "network.json"
        self._listeners: dict[str, dict[str, Any]] = {}
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._first_run = True
        self._dirty_since: float | None = None
        self._thread = threading.Thread(target=self._loop, name="network-poll", daemon=True)
        context.health.mode = "procfs-poll"
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
        self._thread.start()

    def join(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)

    def _loop(self) -> None:
        while True:
            try:
                self.poll_once()
            except PermissionError as e:
                self.context.report_error(f"cannot read sockets: {e}", {})
            except Exception as e:  # a daemon never dies on one bad poll
                self.context.health.count_error(f"{type(e).__name__}: {e}")
                log.exception("network poll failed")
            if self._stop.wait(self.config.poll_interval):
                break
        try:
            self._save()
        except OSError as e:
            self.context.report_error(f"cannot save network state: {e}", {})

    def poll_once(self) -> None:
        sockets = list(self._sockets())
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
        owners = find_owners({s.inode for s in [*opened, *new_out] if s.inode},
                             self.procfs) if (opened or new_out) else {}
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
        self._first_run = False
        if opened or closed:
            self._save()
        elif new_out and self._dirty_since is None:
            self._dirty_since = self._clock()
        if self._dirty_since is not None and self._clock() - self._dirty_since > 60:
            self._save()

    def _is_outbound(self, s: Socket, listen_ports: set[tuple[str, int]]) -> bool:
        if s.transport == "tcp" and s.state not in (TCP_ESTABLISHED, TCP_SYN_SENT):
            return False
        if s.transport == "udp" and s.state != TCP_ESTABLISHED:
            return False
        if s.remote_port == 0 or (s.transport, s.local_port) in listen_ports:
            return False
        return self.config.include_loopback or not _loopback(s.remote_ip)

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
