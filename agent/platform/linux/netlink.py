"""The Linux kernel's process events connector (``NETLINK_CONNECTOR``, ``CN_IDX_PROC``).

The kernel multicasts one message per fork, exec and exit of every task on the host to
sockets that have sent ``PROC_CN_MCAST_LISTEN`` (needs ``CAP_NET_ADMIN`` in the initial
user and network namespace). Messages are C structs; ``parse_messages`` decodes them
with ``struct`` (layouts from ``include/uapi/linux/cn_proc.h`` and ``connector.h``).
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import IntEnum

NETLINK_CONNECTOR = 11
CN_IDX_PROC = 1
CN_VAL_PROC = 1
PROC_CN_MCAST_LISTEN = 1
PROC_CN_MCAST_IGNORE = 2
NLMSG_DONE = 3
SO_RCVBUFFORCE = 33

_NLMSGHDR = struct.Struct("=IHHII")      # len, type, flags, seq, pid
_CN_MSG = struct.Struct("=IIIIHH")       # idx, val, seq, ack, len, flags
_EVENT_HEAD = struct.Struct("=IIQ")      # what, cpu, timestamp_ns
_HEADERS = _NLMSGHDR.size + _CN_MSG.size  # 36


class What(IntEnum):
    NONE = 0x0           # the ack of a (un)subscribe; carries err
    FORK = 0x1
    EXEC = 0x2
    UID = 0x4
    GID = 0x40
    SID = 0x80
    PTRACE = 0x100
    COMM = 0x200
    COREDUMP = 0x40000000
    EXIT = 0x80000000


@dataclass(frozen=True)
class ProcEvent:
    what: int
    timestamp_ns: int        # CLOCK_MONOTONIC of the event
    pid: int                 # the task (thread id); for fork: the child
    tgid: int                # its process id; for fork: the child's
    parent_pid: int = 0      # fork: the parent task; exit: the parent (kernels >= 4.18)
    parent_tgid: int = 0
    exit_code: int = 0       # exit: the raw wait status (code << 8 | signal)
    exit_signal: int = 0
    err: int = 0             # NONE (ack): 0 on success


def parse_messages(data: bytes) -> list[ProcEvent]:
    """Decode every process event in one datagram (several netlink messages may share one)."""
    events: list[ProcEvent] = []
    offset = 0
    while offset + _HEADERS + _EVENT_HEAD.size <= len(data):
        nl_len, _type, _flags, _seq, _pid = _NLMSGHDR.unpack_from(data, offset)
        if nl_len < _HEADERS or offset + nl_len > len(data):
            break
        idx, val, _s, _a, cn_len, _f = _CN_MSG.unpack_from(data, offset + _NLMSGHDR.size)
        base = offset + _HEADERS
        if idx == CN_IDX_PROC and val == CN_VAL_PROC and cn_len >= _EVENT_HEAD.size:
            event = _parse_event(data[base:base + cn_len])
            if event is not None:
                events.append(event)
        offset += (nl_len + 3) & ~3
    return events


def _parse_event(body: bytes) -> ProcEvent | None:
    what, _cpu, ts = _EVENT_HEAD.unpack_from(body, 0)
    rest = body[_EVENT_HEAD.size:]

    def ints(n: int) -> tuple[int, ...]:
        have = min(n, len(rest) // 4)
        return struct.unpack_from(f"={have}I", rest, 0) + (0,) * (n - have)

    if what == What.FORK:
        ppid, ptgid, cpid, ctgid = ints(4)
        return ProcEvent(what, ts, cpid, ctgid, parent_pid=ppid, parent_tgid=ptgid)
    if what == What.EXEC:
        pid, tgid = ints(2)
        return ProcEvent(what, ts, pid, tgid)
    if what == What.EXIT:
        pid, tgid, code, sig, ppid, ptgid = ints(6)
        return ProcEvent(what, ts, pid, tgid, parent_pid=ppid, parent_tgid=ptgid,
                         exit_code=code, exit_signal=sig)
    if what == What.NONE:
        (err,) = ints(1)
        return ProcEvent(what, ts, 0, 0, err=err)
    return None


def _control(op: int) -> bytes:
    payload = struct.pack("=I", op)
    cn = _CN_MSG.pack(CN_IDX_PROC, CN_VAL_PROC, 0, 0, len(payload), 0) + payload
    return _NLMSGHDR.pack(_NLMSGHDR.size + len(cn), NLMSG_DONE, 0, 0, os.getpid()) + cn


class ConnectorError(OSError):
    """The connector cannot be used here (not root, not Linux, a container, ...)."""


class ProcConnector:
    """A subscribed process-events socket. ``recv`` returns events or [] on timeout.

    The receive buffer holds the events of a burst while the reader is busy: it is set
    with ``SO_RCVBUFFORCE`` (root: past ``net.core.rmem_max``), else ``SO_RCVBUF``
    (capped by rmem_max); ``granted_buffer`` is what the kernel gave (it reports double
    the request: half is its bookkeeping) and ``buffer_option`` which option worked.
    """

    def __init__(self, *, socket_factory: Callable[..., socket.socket] = socket.socket,
                 recv_buffer: int = 32 * 1024 * 1024, timeout: float = 2.0) -> None:
        self._factory = socket_factory
        self.recv_buffer = recv_buffer
        self._timeout = timeout
        self.granted_buffer = 0
        self.buffer_option = "none"
        self.sock: socket.socket | None = None

    def open(self, *, ack_timeout: float = 2.0) -> None:
        """Create, bind and subscribe; raise ConnectorError if the kernel says no."""
        family = getattr(socket, "AF_NETLINK", None)
        if family is None:
            raise ConnectorError(errno.EAFNOSUPPORT, "AF_NETLINK: not Linux")
        try:
            sock = self._factory(family, socket.SOCK_DGRAM, NETLINK_CONNECTOR)
        except OSError as e:
            raise ConnectorError(e.errno, f"netlink connector socket: {e.strerror}") from e
        try:
            self._size_buffer(sock)
            sock.bind((0, CN_IDX_PROC))  # port id 0: the kernel picks a unique one
            sock.settimeout(ack_timeout)
            sock.send(_control(PROC_CN_MCAST_LISTEN))
            self._await_ack(sock, ack_timeout)
            sock.settimeout(self._timeout)
        except ConnectorError:
            sock.close()
            raise
        except OSError as e:
            sock.close()
            raise ConnectorError(e.errno or errno.EIO,
                                 f"netlink process connector: {e.strerror or e}") from e
        self.sock = sock

    def _size_buffer(self, sock: socket.socket) -> None:
        for opt, name in ((SO_RCVBUFFORCE, "SO_RCVBUFFORCE"), (socket.SO_RCVBUF, "SO_RCVBUF")):
            try:
                sock.setsockopt(socket.SOL_SOCKET, opt, self.recv_buffer)
            except OSError:   # EPERM without CAP_NET_ADMIN: the capped option next
                continue
            self.buffer_option = name
            break
        with contextlib.suppress(OSError):
            self.granted_buffer = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)

    @staticmethod
    def _await_ack(sock: socket.socket, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                data = sock.recv(65536)
            except socket.timeout:
                break
            for event in parse_messages(data):
                if event.what == What.NONE:
                    if event.err:
                        raise ConnectorError(event.err, "process connector refused the "
                                             f"subscription: {os.strerror(event.err)}")
                    return
            # other events before the ack: the subscription works
            if parse_messages(data):
                return
        raise ConnectorError(errno.ETIMEDOUT, "no answer from the process connector "
                             "(a container without it?)")

    def recv(self) -> list[ProcEvent]:
        """Events from the next datagram; [] on timeout. ENOBUFS (the buffer overran:
        the kernel dropped events, it does not say how many) is raised as OSError."""
        assert self.sock is not None
        try:
            data = self.sock.recv(65536)
        except socket.timeout:
            return []
        return parse_messages(data)

    def close(self) -> None:
        if self.sock is not None:
            with contextlib.suppress(OSError):
                self.sock.send(_control(PROC_CN_MCAST_IGNORE))
            self.sock.close()
            self.sock = None
