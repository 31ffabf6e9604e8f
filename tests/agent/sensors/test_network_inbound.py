"""Accepted connections: which sockets count, once each, the rate limit, the fallback."""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest

from agent.platform.linux.sock_diag import TCP_ESTABLISHED, TCP_LISTEN, Dump, SockDiagError, Socket
from agent.sensors.base import SensorContext, SensorHealth
from agent.sensors.network import NetworkConfig, NetworkSensor
from agent.sensors.network_inbound import InboundTracker, RateLimit
from common.yamlconf import Duration

LISTEN = Socket("tcp", "ipv4", "0.0.0.0", 22, "0.0.0.0", 0, TCP_LISTEN, 0, 10)


def conn(remote: str, rport: int, inode: int, *, lport: int = 22,
         local: str = "10.0.0.1") -> Socket:
    return Socket("tcp", "ipv4", local, lport, remote, rport, TCP_ESTABLISHED, 0, inode)


def test_only_new_remote_connections_to_a_listener_count() -> None:
    tracker = InboundTracker()
    first = tracker.new([LISTEN, conn("203.0.113.5", 4000, 100),
                         conn("127.0.0.1", 4001, 101, local="127.0.0.1"),  # loopback
                         conn("203.0.113.5", 4002, 0),                     # not accepted yet
                         conn("203.0.113.5", 80, 102, lport=40000)])       # outbound
    assert [(s.inode, listener.inode) for s, listener in first] == [(100, 10)]
    tracker.commit()
    # the same connection again is not new; a new inode from the same client is
    again = tracker.new([LISTEN, conn("203.0.113.5", 4000, 100),
                         conn("203.0.113.5", 4003, 103)])
    assert [s.inode for s, _ in again] == [103]
    # not committed (the poll failed): the next poll reports it again
    assert [s.inode for s, _ in tracker.new([LISTEN, conn("203.0.113.5", 4003, 103)])] == [
        103]
    tracker.commit()
    v6 = Socket("tcp", "ipv6", "::", 443, "::", 0, TCP_LISTEN, 0, 11)
    mapped = Socket("tcp", "ipv6", "10.0.0.1", 443, "198.51.100.7", 5000,
                    TCP_ESTABLISHED, 0, 104)
    assert [s.inode for s, _ in tracker.new([v6, mapped])] == [104]
    assert [s.inode for s, _ in InboundTracker(include_loopback=True).new(
        [LISTEN, conn("127.0.0.1", 4001, 101, local="127.0.0.1")])] == [101]


def test_rate_limit_counts_what_it_suppresses() -> None:
    now = [0.0]
    limit = RateLimit(burst=2, window=60, max_keys=2, clock=lambda: now[0])
    key = ("203.0.113.5", 22)
    assert [limit.allow(key) for _ in range(5)] == [(True, 0), (True, 0), (False, 0),
                                                    (False, 0), (False, 0)]
    assert limit.allow(("198.51.100.1", 22)) == (True, 0)   # another key: its own budget
    now[0] = 61.0
    assert limit.allow(key) == (True, 3)      # a new window says how many were held back
    assert limit.allow(key) == (True, 0)
    limit.allow(key)
    limit.allow(("a", 1))
    limit.allow(("b", 1))                     # evicts key (LRU of 2) with 1 suppressed
    assert limit.evicted_suppressed == 1 and limit.suppressed_total == 4


def context(docs: list[dict[str, Any]], errors: list[str]) -> SensorContext:
    return SensorContext(emit=docs.append, health=SensorHealth("network"),
                         state_dir=Path(tempfile.mkdtemp()),
                         report_error=lambda m, f: errors.append(m))


def test_sensor_reports_accepted_connections_rate_limited() -> None:
    docs: list[dict[str, Any]] = []
    current = [LISTEN]
    now = [0.0]
    sensor = NetworkSensor(NetworkConfig(inbound_burst=2, inbound_window=Duration(60.0)),
                           context(docs, []), sockets=lambda: current, clock=lambda: now[0])
    sensor.poll_once()
    docs.clear()
    for i in range(6):   # six connections from one client to port 22, one a poll
        current[:] = [LISTEN, conn("203.0.113.5", 5000 + i, 200 + i)]
        sensor.poll_once()
    now[0] = 100.0
    current[:] = [LISTEN, conn("203.0.113.5", 6000, 300)]
    sensor.poll_once()
    assert [d["event"]["action"] for d in docs] == ["connection_accepted"] * 3
    first = docs[0]
    assert first["network"] == {"transport": "tcp", "type": "ipv4", "direction": "ingress"}
    assert first["source"] == {"ip": "203.0.113.5", "port": 5000}
    assert first["destination"] == {"ip": "10.0.0.1", "port": 22}
    assert [d.get("sisguard", {}).get("network", {}).get("suppressed") for d in docs] == [
        None, None, 4]


class Refused:
    def dump(self, *, udp: bool = True) -> Dump:
        raise SockDiagError(errno.EPERM, "sock_diag netlink socket: Operation not permitted")


def test_refused_sock_diag_falls_back_to_proc_net() -> None:
    docs: list[dict[str, Any]] = []
    errors: list[str] = []
    ctx = context(docs, errors)
    sensor = NetworkSensor(NetworkConfig(), ctx, sock_diag=Refused())  # type: ignore[arg-type]
    assert ctx.health.mode == "sock_diag"
    sensor.poll_once()
    assert ctx.health.mode == "procfs-poll"
    assert "Operation not permitted" in ctx.health.details["fallback"]
    assert int(ctx.health.details["sockets"]) > 0   # the test's own pytest has sockets


class Flooded:
    def dump(self, *, udp: bool = True) -> Dump:
        return Dump([conn("203.0.113.5", 1000 + i, 500 + i) for i in range(3)],
                    truncated=True)


def test_a_cut_table_is_said_once() -> None:
    errors: list[str] = []
    ctx = context([], errors)
    sensor = NetworkSensor(NetworkConfig(max_sockets=3), ctx,
                           sock_diag=Flooded())  # type: ignore[arg-type]
    sensor.poll_once()
    sensor.poll_once()
    assert len(errors) == 1 and "max_sockets (3)" in errors[0]
    assert ctx.health.details["sockets"] == "3 (cut)"


class Same:
    """The same table each poll, said unchanged after the first (as SockDiag does)."""

    def __init__(self, sockets: list[Socket]) -> None:
        self.sockets, self.calls = sockets, 0

    def dump(self, *, udp: bool = True) -> Dump:
        self.calls += 1
        return Dump(list(self.sockets), unchanged=self.calls > 1)


def test_an_unchanged_table_skips_the_poll_but_not_after_a_failed_one() -> None:
    docs: list[dict[str, Any]] = []
    same = Same([LISTEN, conn("203.0.113.5", 4000, 100)])
    sensor = NetworkSensor(NetworkConfig(), context(docs, []),
                           sock_diag=same)  # type: ignore[arg-type]
    real_find = sensor.procfs.pids
    sensor.procfs.pids = lambda: (_ for _ in ()).throw(OSError("boom"))  # type: ignore
    with contextlib.suppress(OSError):
        sensor.poll_once()
    assert docs == []
    sensor.procfs.pids = real_find  # type: ignore[method-assign]
    sensor.poll_once()              # unchanged, but the poll before did not finish
    assert [d["event"]["action"] for d in docs] == ["listen_opened", "connection_accepted"]
    sensor.poll_once()
    assert len(docs) == 2


FLOOD = """\
import socket, sys
held = []
for _ in range(int(sys.argv[1])):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    held.append(s)
print("ready", flush=True)
sys.stdin.read()
"""


def test_an_unprivileged_socket_flood_cuts_the_table_and_is_said() -> None:
    """nobody opens 400 sockets: the real sock_diag poll reads at most max_sockets, says
    so once, and still works (the bound holds against the attacker's table)."""
    if os.geteuid() != 0:
        if os.environ.get("CI") == "true":
            pytest.fail("needs root to run the flood as nobody")
        pytest.skip("needs root to run the flood as nobody")
    # the system's Python: a pyenv interpreter under /root is not one nobody may run
    python = "/usr/bin/python3" if os.access("/usr/bin/python3", os.X_OK) else sys.executable
    flood = subprocess.Popen(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                              python, "-c", FLOOD, "400"],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert flood.stdout is not None and flood.stdout.readline().strip() == "ready"
        errors: list[str] = []
        ctx = context([], errors)
        sensor = NetworkSensor(NetworkConfig(max_sockets=100), ctx)
        sensor.poll_once()
        sensor.poll_once()
        assert ctx.health.mode == "sock_diag"
        assert ctx.health.details["sockets"] == "100 (cut)"
        assert len(errors) == 1 and "max_sockets (100)" in errors[0]
    finally:
        flood.kill()
        flood.wait(timeout=10)


def test_is_loopback_agrees_with_ipaddress_on_normal_text() -> None:
    import ipaddress

    from agent.sensors.network_inbound import is_loopback
    for raw in ("127.0.0.1", "127.255.0.9", "10.0.0.1", "128.0.0.1", "1.127.0.0", "::1",
                "::", "::2", "2001:db8::1", "fe80::1", "::ffff:127.0.0.1", "0.0.0.0"):
        ip = ipaddress.ip_address(raw)
        text = str(ip.ipv4_mapped) if isinstance(ip, ipaddress.IPv6Address) and \
            ip.ipv4_mapped is not None else str(ip)
        assert is_loopback(text) == ipaddress.ip_address(text).is_loopback, raw
