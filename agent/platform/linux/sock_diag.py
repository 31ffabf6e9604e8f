"""The kernel's socket table through ``NETLINK_SOCK_DIAG`` (``inet_diag_req_v2`` dumps).

One dump per (family, protocol) returns the TCP or UDP sockets in the states asked for,
as ``inet_diag_msg`` structs (layouts from ``include/uapi/linux/inet_diag.h`` and
``sock_diag.h``): the kernel filters by state, so an idle poll reads only listeners and
connections, with no text to format or parse. Any user may dump (the kernel shows every
socket of the network namespace, as ``/proc/net/tcp`` does); it is refused in some
sandboxes (seccomp, gVisor, an old kernel without ``inet_diag``), then ``SockDiagError``
says so and the sensor falls back to ``/proc/net``.

Every reply is attacker-influenced (a local user can open tens of thousands of sockets):
``dump`` reads at most ``max_sockets`` and says when that bound cut the dump; it parses
defensively (a message whose length is wrong ends the datagram, a truncated struct is
skipped) and gives up after ``max_datagrams`` reads or ``timeout`` seconds.
"""

from __future__ import annotations

import errno
import ipaddress
import socket
import struct
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

NETLINK_SOCK_DIAG = 4
SOCK_DIAG_BY_FAMILY = 20
NLMSG_ERROR, NLMSG_DONE = 2, 3
NLM_F_REQUEST, NLM_F_DUMP = 0x01, 0x300
TCP_ESTABLISHED, TCP_SYN_SENT, TCP_CLOSE, TCP_LISTEN = 0x01, 0x02, 0x07, 0x0A
TCP_STATES = (1 << TCP_ESTABLISHED) | (1 << TCP_SYN_SENT) | (1 << TCP_LISTEN)
UDP_STATES = (1 << TCP_ESTABLISHED) | (1 << TCP_CLOSE)

NLMSGHDR = struct.Struct("=IHHII")          # len, type, flags, seq, pid
SOCKID = struct.Struct(">HH16s16s")         # sport, dport (big-endian), src, dst
REQ_V2 = struct.Struct("=BBBxI")            # family, protocol, ext, pad, states
REQ_TAIL = struct.Struct("=I8s")            # if, cookie (the rest of inet_diag_sockid)
MSG_HEAD = struct.Struct("=BBBB")           # family, state, timer, retrans
MSG_TAIL = struct.Struct("=IIIII")          # expires, rqueue, wqueue, uid, inode
SOCKID_SIZE = SOCKID.size + REQ_TAIL.size   # 48
MSG_SIZE = MSG_HEAD.size + SOCKID_SIZE + MSG_TAIL.size   # 72
_TAIL_AT = MSG_HEAD.size + SOCKID_SIZE

DUMPS = ((socket.AF_INET, socket.IPPROTO_TCP), (socket.AF_INET6, socket.IPPROTO_TCP),
         (socket.AF_INET, socket.IPPROTO_UDP), (socket.AF_INET6, socket.IPPROTO_UDP))


@dataclass(frozen=True)
class Socket:
    """One socket of the table (the same shape whichever reader found it)."""

    transport: str       # tcp / udp
    family: str          # ipv4 / ipv6
    local_ip: str
    local_port: int
    remote_ip: str
    remote_port: int
    state: int
    uid: int
    inode: int           # 0: not attached to a file yet (an accepted connection in the queue)


class SockDiagError(OSError):
    """sock_diag cannot be used here (not Linux, refused by a sandbox, no inet_diag)."""


def request(family: int, protocol: int, states: int, seq: int) -> bytes:
    """One ``SOCK_DIAG_BY_FAMILY`` dump request: every socket of (family, protocol) in
    ``states`` (a bit mask, 1 << TCP state), no extensions."""
    body = (REQ_V2.pack(family, protocol, 0, states)
            + SOCKID.pack(0, 0, b"", b"") + REQ_TAIL.pack(0, b""))
    return NLMSGHDR.pack(NLMSGHDR.size + len(body), SOCK_DIAG_BY_FAMILY,
                         NLM_F_REQUEST | NLM_F_DUMP, seq, 0) + body


def _ip(family: int, raw: bytes) -> str:
    if family == socket.AF_INET:
        return str(ipaddress.IPv4Address(raw[:4]))
    ip = ipaddress.IPv6Address(raw)
    return str(ip.ipv4_mapped) if ip.ipv4_mapped is not None else str(ip)


def parse_diag_msg(body: bytes, transport: str) -> Socket | None:
    """One ``inet_diag_msg``; None if it is too short or of a family we did not ask."""
    if len(body) < MSG_SIZE:
        return None
    family, state, _timer, _retrans = MSG_HEAD.unpack_from(body, 0)
    if family not in (socket.AF_INET, socket.AF_INET6):
        return None
    sport, dport, src, dst = SOCKID.unpack_from(body, MSG_HEAD.size)
    _exp, _rq, _wq, uid, inode = MSG_TAIL.unpack_from(body, _TAIL_AT)
    return Socket(transport, "ipv4" if family == socket.AF_INET else "ipv6",
                  _ip(family, src), sport, _ip(family, dst), dport, state, uid, inode)


@dataclass
class Reply:
    """What one datagram held: sockets, and whether the dump ended (DONE or ERROR)."""

    sockets: list[Socket]
    done: bool = False
    error: int = 0       # a positive errno from NLMSG_ERROR
    malformed: int = 0   # messages whose header or body could not be read
    decoded: int = 0     # sockets not known from the last dump


# one message as it comes: nlmsghdr, then what identifies the socket (the queue sizes,
# timers and retransmits change from dump to dump and are skipped)
_IDENTITY = struct.Struct("=IHHII2s2x48s12x4x4s")


def parse_reply(data: bytes, transport: str, seq: int, *, limit: int,
                known: dict[tuple[bytes, bytes, bytes], Socket] | None = None,
                seen: dict[tuple[bytes, bytes, bytes], Socket] | None = None) -> Reply:
    """Decode one datagram of a dump. Reads at most ``limit`` sockets; a message header
    whose length is impossible ends the datagram (the rest cannot be framed).

    ``known`` holds the sockets of the last dump by their identity (family, state,
    addresses, ports, inode): one found there is reused, not decoded again (an idle poll
    of a busy server decodes nothing); every socket of this one is put in ``seen``."""
    reply = Reply([])
    sockets = reply.sockets
    size = len(data)
    offset = 0
    while offset + NLMSGHDR.size <= size and len(sockets) < limit:
        length, kind, _flags, mseq, _pid = NLMSGHDR.unpack_from(data, offset)
        if length < NLMSGHDR.size or offset + length > size:
            reply.malformed += 1
            break
        start = offset
        offset += (length + 3) & ~3
        if mseq != seq:          # a stale answer to an earlier request: not ours
            continue
        if kind == SOCK_DIAG_BY_FAMILY:
            if length < _IDENTITY.size:
                reply.malformed += 1
                continue
            key = _IDENTITY.unpack_from(data, start)[5:]
            found = known.get(key) if known is not None else None
            if found is None:
                found = parse_diag_msg(data[start + NLMSGHDR.size:start + length], transport)
                reply.decoded += 1
                if found is None:
                    reply.malformed += 1
                    continue
            sockets.append(found)
            if seen is not None:
                seen[key] = found
            continue
        body = data[start + NLMSGHDR.size:start + length]
        if kind == NLMSG_DONE:
            reply.done = True
            break
        if kind == NLMSG_ERROR:
            (code,) = struct.unpack_from("=i", body, 0) if len(body) >= 4 else (-errno.EIO,)
            reply.done, reply.error = True, -code if code < 0 else code
            break
        reply.malformed += 1
    return reply


@dataclass
class Dump:
    """The sockets of one poll, and what cut it short."""

    sockets: list[Socket]
    truncated: bool = False   # max_sockets reached: some sockets were not read
    malformed: int = 0
    incomplete: int = 0       # dumps that ended on the datagram or time bound
    unchanged: bool = False   # exactly the sockets of the last dump (same states)


class SockDiag:
    """Dumps through one netlink socket per call (closed after: a dump cut short by the
    bound leaves no stale replies behind). ``socket_factory`` is passed in for tests."""

    def __init__(self, *, max_sockets: int = 20_000, max_datagrams: int = 4096,
                 timeout: float = 2.0, recv_size: int = 65536,
                 socket_factory: Callable[..., socket.socket] = socket.socket) -> None:
        self.max_sockets = max_sockets
        self.max_datagrams = max_datagrams
        self.timeout = timeout
        self.recv_size = recv_size
        self._factory = socket_factory
        self._seq = 0
        # the last dump's sockets by identity (at most max_sockets)
        self._known: dict[tuple[bytes, bytes, bytes], Socket] = {}

    def _open(self) -> socket.socket:
        family = getattr(socket, "AF_NETLINK", None)
        if family is None:
            raise SockDiagError(errno.EAFNOSUPPORT, "AF_NETLINK: not Linux")
        try:
            sock = self._factory(family, socket.SOCK_DGRAM, NETLINK_SOCK_DIAG)
        except OSError as e:
            raise SockDiagError(e.errno or errno.EIO,
                                f"sock_diag netlink socket: {e.strerror or e}") from e
        sock.settimeout(self.timeout)
        return sock

    def dump(self, *, udp: bool = True) -> Dump:
        """TCP listeners and connections (and UDP sockets) of IPv4 and IPv6."""
        wanted: Iterable[tuple[int, int]] = (d for d in DUMPS
                                             if udp or d[1] == socket.IPPROTO_TCP)
        result = Dump([])
        seen: dict[tuple[bytes, bytes, bytes], Socket] = {}
        decoded = 0
        sock = self._open()
        try:
            for family, protocol in wanted:
                if len(result.sockets) >= self.max_sockets:
                    result.truncated = True
                    break
                decoded += self._dump_one(sock, family, protocol, result, seen)
        finally:
            sock.close()
        result.unchanged = (decoded == 0 and len(seen) == len(self._known)
                            and not result.truncated and not result.incomplete)
        self._known = seen
        return result

    def _dump_one(self, sock: socket.socket, family: int, protocol: int,
                  result: Dump, seen: dict[tuple[bytes, bytes, bytes], Socket]) -> int:
        """One (family, protocol) dump into ``result``; returns how many sockets had to
        be decoded (not known from the last dump)."""
        decoded = 0
        transport = "tcp" if protocol == socket.IPPROTO_TCP else "udp"
        self._seq = (self._seq + 1) & 0xFFFFFFFF
        seq = self._seq
        states = TCP_STATES if transport == "tcp" else UDP_STATES
        try:
            sock.sendto(request(family, protocol, states, seq), (0, 0))
        except OSError as e:
            raise SockDiagError(e.errno or errno.EIO,
                                f"sock_diag request refused: {e.strerror or e}") from e
        deadline = time.monotonic() + self.timeout
        for _ in range(self.max_datagrams):
            left = self.max_sockets - len(result.sockets)
            if left <= 0:
                result.truncated = True
                return decoded
            if time.monotonic() > deadline:
                break
            try:
                data = sock.recv(self.recv_size)
            except socket.timeout:
                break
            except OSError as e:
                raise SockDiagError(e.errno or errno.EIO,
                                    f"sock_diag reply: {e.strerror or e}") from e
            reply = parse_reply(data, transport, seq, limit=left, known=self._known,
                                seen=seen)
            result.sockets.extend(reply.sockets)
            result.malformed += reply.malformed
            decoded += reply.decoded
            if reply.error:
                if reply.error == errno.ENOENT and family == socket.AF_INET6:
                    return decoded   # no IPv6 on this host: nothing to list
                if reply.error == errno.ENOENT and transport == "udp":
                    return decoded   # udp_diag not loaded: TCP still works
                raise SockDiagError(reply.error, f"sock_diag {transport} dump refused: "
                                    f"{errno.errorcode.get(reply.error, reply.error)}")
            if reply.done:
                return decoded
        result.incomplete += 1
        return decoded
