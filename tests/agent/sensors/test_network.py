"""The network sensor: /proc/net parsing and, for real, a listener and a connection."""

from __future__ import annotations

import os
import socket
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

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
