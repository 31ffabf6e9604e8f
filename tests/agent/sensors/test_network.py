"""The network sensor: /proc/net parsing and, for real, a listener, an outbound connection
and an accepted one from another network namespace (a veth pair)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.sensors.base import SensorContext, SensorHealth
from agent.sensors.network import NetworkConfig, NetworkSensor, Socket, parse_table
from tests.harness import Agent, Collector, wait_for

TCP = """\
  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1234 1
   1: 0200000A:A1B2 0101A8C0:0050 01 00000000:00000000 00:00000000 00000000    33        0 5678 1
"""
TCP6 = (
    "  sl  local_address                         remote_address                        st\n"
    "   0: 00000000000000000000000001000000:0016 00000000000000000000000000000000:0000 0A "
    "00000000:00000000 00:00000000 00000000     0        0 99 1\n")


def test_parse_proc_net_tables() -> None:
    listen, conn = parse_table(TCP, "tcp", "ipv4")
    assert (listen.local_ip, listen.local_port, listen.state, listen.inode) == (
        "127.0.0.1", 8080, 0x0A, 1234)
    assert (conn.local_ip, conn.remote_ip, conn.remote_port, conn.uid) == (
        "10.0.0.2", "192.168.1.1", 80, 33)
    (v6,) = parse_table(TCP6, "tcp", "ipv6")
    assert (v6.local_ip, v6.local_port) == ("::1", 22)


def test_seen_set_is_bounded_and_listeners_diffed() -> None:
    docs: list[dict[str, Any]] = []
    current: list[Socket] = []
    ctx = SensorContext(emit=docs.append, health=SensorHealth("network"),
                        state_dir=Path(tempfile.mkdtemp()), report_error=lambda m, f: None)
    sensor = NetworkSensor(NetworkConfig(seen_max=2), ctx, sockets=lambda: current)
    sensor.poll_once()
    for port in (1, 2, 3, 1):
        current[:] = [Socket("tcp", "ipv4", "10.0.0.2", 40000, "203.0.113.9", port, 1, 0, 0)]
        sensor.poll_once()
    # 1, 2, 3 are new; 1 was evicted by 3 (max 2), so it is new again
    assert [d["destination"]["port"] for d in docs] == [1, 2, 3, 1]
    docs.clear()
    current[:] = [Socket("tcp", "ipv4", "0.0.0.0", 4444, "0.0.0.0", 0, 0x0A, 0, 0)]
    sensor.poll_once()
    current[:] = []
    sensor.poll_once()
    assert [d["event"]["action"] for d in docs] == ["listen_opened", "listen_closed"]
    # a restart does not report the listeners again
    current[:] = [Socket("tcp", "ipv4", "0.0.0.0", 5555, "0.0.0.0", 0, 0x0A, 0, 0)]
    sensor.poll_once()
    docs.clear()
    again = NetworkSensor(NetworkConfig(), ctx, sockets=lambda: current)
    again.poll_once()
    assert docs == []


def test_real_listener_and_outbound_connection(
        collector_factory: Callable[..., Collector], agent_factory: Callable[..., Agent],
        tmp_path: Path) -> None:
    collector = collector_factory()
    cfg = tmp_path / "agent.yml"
    cfg.write_text("sensor:\n  network:\n    poll_interval: 0.3\n    include_loopback: true\n")
    agent_factory(collector, "--sensors", "network", "--config", str(cfg))
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    port = server.getsockname()[1]

    def events(action: str, **where: Any) -> list[dict[str, Any]]:
        return [e for e in collector.events() if e["event"].get("action") == action
                and all(e.get(k, {}).get("port") == v for k, v in where.items())]

    opened = wait_for(lambda: events("listen_opened", server=port), timeout=20,
                      message=f"listen_opened on {port}")
    assert opened[0]["process"]["pid"] == os.getpid()
    assert opened[0]["network"] == {"transport": "tcp", "type": "ipv4"}
    assert opened[0]["server"]["ip"] == "127.0.0.1"
    client = socket.create_connection(("127.0.0.1", port))
    out = wait_for(lambda: events("outbound_connection", destination=port), timeout=20,
                   message="the outbound connection")
    assert out[0]["process"]["pid"] == os.getpid()
    assert out[0]["network"]["direction"] == "egress"
    assert out[0]["source"]["port"] == client.getsockname()[1]
    client.close()
    server.close()
    closed = wait_for(lambda: events("listen_closed", server=port), timeout=20,
                      message="listen_closed")
    assert closed[0]["process"]["pid"] == os.getpid()


INBOUND_RULE = """\
title: Test inbound connection to the netns listener
id: 5d1e0c33-7a38-4f51-9a57-2c4b8f0e6a11
level: medium
logsource:
    product: linux
    category: network_connection
detection:
    selection:
        Initiated: 'false'
        SourceIp|startswith: '10.213.77.'
        DestinationPort: {port}
    condition: selection
"""
LISTENER = """\
import socket, sys, threading
server = socket.socket()
server.bind(("10.213.77.1", 0))
server.listen(64)
print(server.getsockname()[1], flush=True)
held = []
def accept():
    while True:
        held.append(server.accept()[0])
threading.Thread(target=accept, daemon=True).start()
sys.stdin.read()
"""
CLIENT = """\
import socket, sys
held = []
for line in sys.stdin:   # a number: open that many more connections, held open
    for _ in range(int(line)):
        held.append(socket.create_connection(("10.213.77.1", int(sys.argv[1])), timeout=10))
    print(held[-1].getsockname()[1], flush=True)
"""


@pytest.fixture
def veth_namespace() -> Iterator[str]:
    """A network namespace joined to this one by a veth pair: 10.213.77.1 here, .2 there
    (addresses on these two interfaces only; both removed at the end)."""
    if shutil.which("ip") is None or os.geteuid() != 0:
        if os.environ.get("CI") == "true":
            pytest.fail("the netns test needs root and iproute2")
        pytest.skip("needs root and iproute2")
    ns, here, there = f"sgnet{os.getpid()}", f"sgv{os.getpid()}a", f"sgv{os.getpid()}b"

    def ip(*args: str) -> None:
        subprocess.run(["ip", *args], check=True, capture_output=True, timeout=10)

    try:
        ip("netns", "add", ns)
        ip("link", "add", here, "type", "veth", "peer", "name", there)
        ip("link", "set", there, "netns", ns)
        ip("addr", "add", "10.213.77.1/30", "dev", here)
        ip("link", "set", here, "up")
        ip("-n", ns, "addr", "add", "10.213.77.2/30", "dev", there)
        ip("-n", ns, "link", "set", there, "up")
        ip("-n", ns, "link", "set", "lo", "up")
        yield ns
    finally:
        subprocess.run(["ip", "link", "del", here], capture_output=True, timeout=10)
        subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=10)


def test_accepted_connection_from_another_namespace_fires_an_inbound_rule(
        collector_factory: Callable[..., Collector], agent_factory: Callable[..., Agent],
        tmp_path: Path, veth_namespace: str) -> None:
    listener = subprocess.Popen([sys.executable, "-c", LISTENER], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, text=True)
    client: subprocess.Popen[str] | None = None
    try:
        assert listener.stdout is not None
        port = int(listener.stdout.readline())
        rules = tmp_path / "rules"
        rules.mkdir()
        (rules / "inbound.yml").write_text(INBOUND_RULE.format(port=port))
        collector = collector_factory("--rules", str(rules))
        cfg = tmp_path / "agent.yml"
        cfg.write_text("sensor:\n  network:\n    poll_interval: 0.2\n    inbound_burst: 2\n"
                       "    inbound_window: 1s\n")
        agent_factory(collector, "--sensors", "network", "--config", str(cfg))
        client = subprocess.Popen(["ip", "netns", "exec", veth_namespace, sys.executable,
                                   "-c", CLIENT, str(port)], stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, text=True, bufsize=1)
        assert client.stdin is not None and client.stdout is not None
        opened = 0

        def connect(n: int) -> int:
            nonlocal opened
            assert client is not None and client.stdin and client.stdout
            client.stdin.write(f"{n}\n")
            client.stdin.flush()
            opened += n
            return int(client.stdout.readline())

        client_port = connect(1)

        def accepted() -> list[dict[str, Any]]:
            return [e for e in collector.events()
                    if e["event"].get("action") == "connection_accepted"
                    and e.get("destination", {}).get("port") == port]

        (event, *more) = wait_for(accepted, timeout=15, message="connection_accepted")
        assert not more   # one connection, reported once however many polls saw it
        assert event["network"]["direction"] == "ingress"
        assert event["source"] == {"ip": "10.213.77.2", "port": client_port}
        assert event["destination"] == {"ip": "10.213.77.1", "port": port}
        assert event["process"]["pid"] == listener.pid
        assert event["process"]["executable"] == os.path.realpath(sys.executable)
        assert event["user"]["id"] == str(os.getuid())
        alerts = wait_for(lambda: [a for a in collector.alerts() if "netns listener" in
                                   str(a.get("rule", {}).get("name", ""))],
                          timeout=15, message="the Initiated: 'false' alert")
        assert len(alerts) == 1
        # a flood from one client: at most 2 a second get through, the rest are counted
        connect(30)

        def suppressed() -> list[dict[str, Any]] | None:
            events = accepted()
            if any(e.get("sisguard", {}).get("network", {}).get("suppressed")
                   for e in events):
                return events
            connect(1)    # the window moves on: the next one says what was held back
            return None

        events = wait_for(suppressed, timeout=15, interval=0.3,
                          message="an event with sisguard.network.suppressed")
        told = sum(e.get("sisguard", {}).get("network", {}).get("suppressed", 0)
                   for e in events)
        assert len(events) < opened and len(events) + told <= opened
        # the 30 came within one 1 s window (two at most): all but 2 (4) were held back
        # and the first event of a later window counted them
        assert told >= 30 - 4
    finally:
        for proc in (client, listener):
            if proc is not None:
                proc.kill()
                proc.wait(timeout=10)
