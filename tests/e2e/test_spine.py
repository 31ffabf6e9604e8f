"""End to end through real processes: enroll, stream over mutual TLS, archive."""

from __future__ import annotations

import hashlib
import signal
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.harness import Agent, Collector, wait_for

Factory = Callable[..., Collector]
AgentFactory = Callable[..., Agent]


def fim_events(collector: Collector, root: Path) -> list[dict[str, Any]]:
    return [e for e in collector.events()
            if e["event"]["dataset"] == "sisguard.fim"
            and e.get("file", {}).get("path", "").startswith(str(root))]


def test_file_written_reaches_archive_with_hash_and_agent_id(
        collector: Collector, agent_factory: AgentFactory, tmp_path: Path) -> None:
    www = tmp_path / "www"
    www.mkdir()
    agent = agent_factory(collector, "--sensors", "fim", "--watch", str(www))
    content = b"<html>xin chao</html>\n"
    (www / "index.html").write_bytes(content)

    events = wait_for(lambda: fim_events(collector, www), timeout=2.0,
                      message="the file event in the archive within 2 s")
    event = events[0]
    assert event["file"]["path"] == str(www / "index.html")
    assert event["file"]["hash"]["sha256"] == hashlib.sha256(content).hexdigest()
    assert event["event"]["action"] == "created"
    assert event["agent"]["id"] == agent.agent_id
    assert event["organization"]["name"] == "test-org"
    assert event["event"]["id"] == f"{agent.agent_id}-{event['event']['sequence']}"


def _write_files(root: Path, n: int, start: int = 0) -> None:
    for i in range(start, start + n):
        (root / f"f{i:05d}.txt").write_text(f"{i}\n")


def _created_paths(collector: Collector, root: Path) -> Counter[str]:
    return Counter(e["file"]["path"] for e in fim_events(collector, root)
                   if e["event"]["action"] == "created")


def _assert_exactly_once(collector: Collector, root: Path, n: int) -> None:
    def all_there() -> bool:
        return len(_created_paths(collector, root)) == n

    wait_for(all_there, timeout=60, message=f"{n} distinct files in the archive")
    events = collector.events()
    ids = Counter(e["event"]["id"] for e in events)
    assert [i for i, c in ids.items() if c > 1] == [], "an event was archived twice"
    paths = _created_paths(collector, root)
    assert len(paths) == n and set(paths.values()) == {1}


def test_collector_sigkill_while_agent_emits_loses_and_duplicates_nothing(
        collector: Collector, agent_factory: AgentFactory, tmp_path: Path) -> None:
    www = tmp_path / "www"
    www.mkdir()
    agent = agent_factory(collector, "--sensors", "fim", "--watch", str(www))
    _write_files(www, 1000)
    wait_for(lambda: len(_created_paths(collector, www)) > 50, timeout=20,
             message="some events archived before the kill")
    assert collector.proc is not None
    collector.proc.kill(signal.SIGKILL)
    _write_files(www, 1000, start=1000)
    wait_for(lambda: agent.spool().get("last_seq", 0) >= 2000, timeout=30,
             message="all 2,000 events in the agent's spool while the collector is down")
    collector.start()
    _assert_exactly_once(collector, www, 2000)


def test_agent_sigkill_and_restart_resends_unacked_exactly_once(
        collector: Collector, agent_factory: AgentFactory, tmp_path: Path) -> None:
    www = tmp_path / "www"
    www.mkdir()
    agent = agent_factory(collector, "--sensors", "fim", "--watch", str(www))
    assert collector.proc is not None and collector.proc.popen is not None
    collector.proc.popen.send_signal(signal.SIGSTOP)  # acks stop: all stays in the spool
    try:
        _write_files(www, 2000)
        wait_for(lambda: agent.spool().get("events", 0) >= 2000, timeout=30,
                 message="2,000 events waiting in the spool")
        assert agent.proc is not None
        agent.proc.kill(signal.SIGKILL)
    finally:
        collector.proc.popen.send_signal(signal.SIGCONT)
    # batches already received by the collector before the kill get archived now,
    # and the restarted agent resends every one of them: the archive must dedupe.
    agent.start()
    _assert_exactly_once(collector, www, 2000)
    wait_for(lambda: agent.spool().get("events", 1) == 0, timeout=20,
             message="the spool drained after the acks")
