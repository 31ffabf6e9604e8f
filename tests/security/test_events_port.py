"""The events port's connection limits, against raw HTTP/2 clients and a real agent.

The raw clients speak HTTP/2 by hand (tests/security/h2raw.py); where the port needs a
client certificate they hold a real agent's key (the rogue agent).
"""

from __future__ import annotations

import socket
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from tests.harness import Agent, Collector, wait_for
from tests.security.h2raw import ENHANCE_YOUR_CALM, RawH2, client_context

Factory = Callable[..., Collector]
AgentFactory = Callable[..., Agent]


def _config(tmp_path: Path, text: str) -> str:
    path = tmp_path / "collector-test.yml"
    path.write_text(text)
    return str(path)


def _rogue(collector: Collector, agent: Agent) -> RawH2:
    state = agent.state_dir
    return RawH2("127.0.0.1", collector.port,
                 context=client_context(str(state / "agent.crt"), str(state / "agent.key")))


def test_an_idle_connection_is_closed(
        collector_factory: Factory, agent_factory: AgentFactory, tmp_path: Path) -> None:
    collector = collector_factory("--config", _config(tmp_path, (
        "limits:\n  connection_idle: 1s\n")))
    agent = agent_factory(collector, start=False)
    agent.enroll()
    conn = _rogue(collector, agent).connect()   # mutual TLS done, no call ever
    try:
        wait_for(lambda: conn.goaway_codes, timeout=15, message="GOAWAY to the idle connection")
    finally:
        conn.close()


def test_a_ping_flood_is_sent_away(collector: Collector, agent_factory: AgentFactory) -> None:
    agent = agent_factory(collector, start=False)
    agent.enroll()
    conn = _rogue(collector, agent).connect(pings=20)
    try:
        wait_for(lambda: ENHANCE_YOUR_CALM in conn.goaway_codes or conn.closed.is_set(),
                 timeout=15, message="the server to send the pinger away")
        assert ENHANCE_YOUR_CALM in conn.goaway_codes, conn.goaway_codes   # too_many_pings
    finally:
        conn.close()


def test_connections_that_never_finish_tls_are_closed(
        collector_factory: Factory, tmp_path: Path) -> None:
    collector = collector_factory("--config", _config(tmp_path, (
        "limits:\n  handshake_timeout: 1s\n")))
    socks = [socket.create_connection(("127.0.0.1", collector.port), timeout=15)
             for _ in range(50)]

    def closed(s: socket.socket) -> bool:
        try:
            return s.recv(1) == b""
        except ConnectionResetError:
            return True

    try:
        assert all(closed(s) for s in socks)   # recv blocks until the server closes (or 15 s)
    finally:
        for s in socks:
            s.close()


def test_agents_reconnect_across_the_connection_age_without_loss(
        collector_factory: Factory, agent_factory: AgentFactory, tmp_path: Path) -> None:
    collector = collector_factory("--config", _config(tmp_path, (
        "limits:\n  connection_age: 1s\n  connection_age_grace: 1s\n")))
    www = tmp_path / "www"
    www.mkdir()
    agent = agent_factory(collector, "--sensors", "fim", "--watch", str(www))
    assert agent.proc is not None
    proc = agent.proc
    written = 0

    def reconnected_twice_more() -> bool:
        nonlocal written
        (www / f"f{written:04d}.txt").write_text(str(written))
        written += 1
        return proc.since(0).count('"connected to collector"') >= 3

    wait_for(reconnected_twice_more, timeout=60, interval=0.1,
             message="the agent to be cut off by the connection age, and come back, twice")
    paths = [str(www / f"f{i:04d}.txt") for i in range(written)]

    def created() -> Counter[str]:
        return Counter(e["file"]["path"] for e in collector.events()
                       if e.get("file", {}).get("path", "").startswith(str(www))
                       and e["event"]["action"] == "created")

    wait_for(lambda: set(created()) == set(paths), timeout=60,
             message=f"all {written} files in the archive")
    assert [p for p, n in created().items() if n > 1] == []   # resent, never stored twice
