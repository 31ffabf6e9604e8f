"""sock_diag: request packing, reply parsing (hostile replies), the bounds, the real kernel."""

from __future__ import annotations

import errno
import socket
import struct
from typing import Any, cast

import pytest

from agent.platform.linux.procfs import read_sockets
from agent.platform.linux.sock_diag import (
    MSG_SIZE,
    NLMSG_DONE,
    NLMSG_ERROR,
    NLMSGHDR,
    SOCK_DIAG_BY_FAMILY,
    TCP_ESTABLISHED,
    TCP_LISTEN,
    TCP_STATES,
    SockDiag,
    SockDiagError,
    parse_reply,
    request,
)


def diag_msg(*, family: int = socket.AF_INET, state: int = TCP_LISTEN, sport: int = 80,
             dport: int = 0, src: str = "10.0.0.1", dst: str = "0.0.0.0", uid: int = 33,
             inode: int = 1234) -> bytes:
    raw_src, raw_dst = socket.inet_pton(family, src), socket.inet_pton(family, dst)
    return (struct.pack("=BBBB", family, state, 0, 0)
            + struct.pack(">HH16s16s", sport, dport, raw_src, raw_dst)
            + struct.pack("=I8s", 0, b"") + struct.pack("=IIIII", 0, 0, 0, uid, inode))


def message(body: bytes, *, kind: int = SOCK_DIAG_BY_FAMILY, seq: int = 1,
            length: int | None = None) -> bytes:
    size = NLMSGHDR.size + len(body) if length is None else length
    padded = body + b"\0" * (-len(body) % 4)
    return NLMSGHDR.pack(size, kind, 2, seq, 0) + padded


def done(seq: int = 1) -> bytes:
    return message(struct.pack("=i", 0), kind=NLMSG_DONE, seq=seq)


def test_request_is_an_inet_diag_req_v2_dump() -> None:
    raw = request(socket.AF_INET6, socket.IPPROTO_TCP, TCP_STATES, 7)
    length, kind, flags, seq, _pid = NLMSGHDR.unpack_from(raw, 0)
    assert (length, kind, flags, seq) == (len(raw), SOCK_DIAG_BY_FAMILY, 0x301, 7)
    assert len(raw) == 16 + 56     # nlmsghdr + sizeof(struct inet_diag_req_v2)
    family, protocol, ext, states = struct.unpack_from("=BBBxI", raw, 16)
    assert (family, protocol, ext) == (socket.AF_INET6, socket.IPPROTO_TCP, 0)
    assert states == (1 << 1) | (1 << 2) | (1 << 10)


def test_parse_ipv4_ipv6_and_mapped_addresses() -> None:
    data = (message(diag_msg()) + message(diag_msg(
        family=socket.AF_INET6, state=TCP_ESTABLISHED, sport=443, dport=50000,
        src="::ffff:10.0.0.1", dst="2001:db8::7", inode=99)) + done())
    reply = parse_reply(data, "tcp", 1, limit=100)
    assert reply.done and not reply.error and not reply.malformed
    listen, conn = reply.sockets
    assert (listen.local_ip, listen.local_port, listen.remote_port, listen.uid,
            listen.inode, listen.family) == ("10.0.0.1", 80, 0, 33, 1234, "ipv4")
    assert (conn.local_ip, conn.remote_ip, conn.remote_port, conn.state, conn.family) == (
        "10.0.0.1", "2001:db8::7", 50000, TCP_ESTABLISHED, "ipv6")


@pytest.mark.parametrize("data", [
    b"",
    b"\x10\x00",                                              # shorter than a header
    message(diag_msg())[:40],                                 # truncated in the body
    message(diag_msg(), length=4),                            # length below the header
    message(diag_msg(), length=1 << 20),                      # length past the datagram
    message(diag_msg()[:MSG_SIZE - 1]),                       # a struct one byte short
    message(b"\x63" + diag_msg()[1:]),                        # an unknown family
    message(diag_msg(), kind=0x55),                           # not a sock_diag message
])
def test_hostile_replies_cost_only_themselves(data: bytes) -> None:
    reply = parse_reply(data + done(), "tcp", 1, limit=100)
    assert reply.sockets == []


def test_a_bad_length_ends_the_datagram_but_keeps_what_came_before() -> None:
    data = message(diag_msg(inode=1)) + message(diag_msg(inode=2), length=999_999) + done()
    reply = parse_reply(data, "tcp", 1, limit=100)
    assert [s.inode for s in reply.sockets] == [1] and reply.malformed == 1
    assert not reply.done


def test_stale_answers_and_errors() -> None:
    stale = message(diag_msg(inode=5), seq=0)
    reply = parse_reply(stale + message(diag_msg(inode=6)) + done(), "tcp", 1, limit=10)
    assert [s.inode for s in reply.sockets] == [6]
    refused = parse_reply(message(struct.pack("=i", -errno.EPERM) + b"\0" * 16,
                                  kind=NLMSG_ERROR), "tcp", 1, limit=10)
    assert refused.done and refused.error == errno.EPERM


class FakeNetlink:
    """A netlink socket that answers every dump with ``replies`` (datagrams)."""

    def __init__(self, replies: list[bytes]) -> None:
        self.replies = replies
        self.sent: list[bytes] = []
        self.closed = False
        self._queue: list[bytes] = []

    def settimeout(self, _t: float) -> None:
        pass

    def sendto(self, data: bytes, _addr: Any) -> None:
        self.sent.append(data)
        seq = NLMSGHDR.unpack_from(data, 0)[3]
        self._queue = [r.replace(b"\xee\xee\xee\xee", struct.pack("=I", seq))
                       for r in self.replies]

    def recv(self, _n: int) -> bytes:
        if not self._queue:
            raise socket.timeout
        return self._queue.pop(0)

    def close(self) -> None:
        self.closed = True


def _with_seq(body: bytes, kind: int = SOCK_DIAG_BY_FAMILY) -> bytes:
    raw = bytearray(message(body, kind=kind))
    raw[8:12] = b"\xee\xee\xee\xee"
    return bytes(raw)


def test_a_flood_is_cut_at_max_sockets_and_said() -> None:
    flood = b"".join(_with_seq(diag_msg(inode=i)) for i in range(400))
    fake = FakeNetlink([flood] * 100 + [_with_seq(struct.pack("=i", 0), NLMSG_DONE)])
    diag = SockDiag(max_sockets=1000, socket_factory=lambda *a: cast(socket.socket, fake))
    dump = diag.dump()
    assert len(dump.sockets) == 1000 and dump.truncated
    assert len(fake.sent) == 1 and fake.closed   # stopped in the first dump, socket closed


def test_a_dump_without_end_is_bounded_by_datagrams() -> None:
    fake = FakeNetlink([_with_seq(diag_msg())] * 50)
    diag = SockDiag(max_datagrams=10, socket_factory=lambda *a: cast(socket.socket, fake))
    dump = diag.dump(udp=False)
    assert len(dump.sockets) == 20 and dump.incomplete == 2 and not dump.truncated


def test_refusals_raise_sock_diag_error() -> None:
    def refused(*_a: Any) -> socket.socket:
        raise PermissionError(errno.EPERM, "Operation not permitted")

    with pytest.raises(SockDiagError):
        SockDiag(socket_factory=refused).dump()
    fake = FakeNetlink([_with_seq(struct.pack("=i", -errno.EACCES) + b"\0" * 16,
                                  NLMSG_ERROR)])
    with pytest.raises(SockDiagError):
        SockDiag(socket_factory=lambda *a: cast(socket.socket, fake)).dump()


def test_the_kernel_agrees_with_proc_net() -> None:
    """A real listener and a real connection: both readers see the same sockets."""
    with socket.socket() as server, socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as udp:
        server.bind(("127.0.0.1", 0))
        server.listen()
        udp.bind(("::1", 0))
        with socket.create_connection(server.getsockname()) as client:
            accepted, _ = server.accept()
            with accepted:
                dump = SockDiag().dump()
                ports = {(s.transport, s.local_port, s.remote_port) for s in dump.sockets}
                port = server.getsockname()[1]
                assert ("tcp", port, 0) in ports
                assert ("tcp", port, client.getsockname()[1]) in ports
                assert ("udp", udp.getsockname()[1], 0) in ports
                proc = {(s.transport, s.local_ip, s.local_port, s.remote_ip, s.remote_port,
                         s.inode) for s in read_sockets().sockets}
                mine = {(s.transport, s.local_ip, s.local_port, s.remote_ip, s.remote_port,
                         s.inode) for s in dump.sockets if port in (s.local_port,
                                                                     s.remote_port)}
                assert len(mine) == 3 and mine <= proc


def test_known_sockets_are_reused_and_an_unchanged_table_is_said() -> None:
    table = [_with_seq(diag_msg(inode=1)) + _with_seq(diag_msg(inode=2)),
             _with_seq(struct.pack("=i", 0), NLMSG_DONE)]
    fake = FakeNetlink(table)
    diag = SockDiag(socket_factory=lambda *a: cast(socket.socket, fake))
    first = diag.dump(udp=False)
    assert not first.unchanged and [s.inode for s in first.sockets] == [1, 2, 1, 2]
    second = diag.dump(udp=False)
    assert second.unchanged
    assert second.sockets == first.sockets
    assert second.sockets[0] is second.sockets[2]   # taken from the last dump, not decoded
    fake.replies = [_with_seq(diag_msg(inode=1)), table[1]]     # socket 2 went away
    third = diag.dump(udp=False)
    assert not third.unchanged and [s.inode for s in third.sockets] == [1, 1]
    # a changed state is another socket: decoded, not taken from the last dump
    fake.replies = [_with_seq(diag_msg(inode=1, state=TCP_ESTABLISHED)), table[1]]
    fourth = diag.dump(udp=False)
    assert not fourth.unchanged and fourth.sockets[0].state == TCP_ESTABLISHED
