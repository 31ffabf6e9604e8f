"""``sisguard-agent status``: the running agent's status.json, and the command on a real one."""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from agent.status import MAX_STATUS_BYTES, STATUS_FILE, StatusWriter, read_status, write_status
from tests.harness import Agent, Collector, cli, wait_for

AgentFactory = Callable[..., Agent]


def test_status_file_is_private_and_replaced_whole(tmp_path: Path) -> None:
    write_status(tmp_path, {"n": 1})
    write_status(tmp_path, {"n": 2})
    path = tmp_path / STATUS_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert json.loads(path.read_text()) == {"n": 2}
    assert sorted(p.name for p in tmp_path.iterdir()) == [STATUS_FILE], "no temporary left"


def test_read_status_says_its_age_and_when_it_is_stale(tmp_path: Path) -> None:
    writer = StatusWriter(tmp_path, lambda: {"collector": "c:1"}, period=2.0)
    writer.write_once()
    written = json.loads((tmp_path / STATUS_FILE).read_text())["time_unix"]
    fresh = read_status(tmp_path, now=written + 1)
    assert fresh is not None and fresh["collector"] == "c:1"
    assert fresh["age_seconds"] == 1.0 and fresh["stale"] is False
    old = read_status(tmp_path, now=written + 7)
    assert old is not None and old["stale"] is True
    assert read_status(tmp_path / "nowhere") is None


def test_read_status_refuses_a_link_and_an_oversized_file(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text('{"stolen": true}')
    state = tmp_path / "state"
    state.mkdir()
    os.symlink(secret, state / STATUS_FILE)
    with pytest.raises(OSError):
        read_status(state)
    (state / STATUS_FILE).unlink()
    (state / STATUS_FILE).write_bytes(b" " * (MAX_STATUS_BYTES + 1))
    big = read_status(state)
    assert big is not None and "not read" in big["error"]
    (state / STATUS_FILE).write_text("[1]")
    listed = read_status(state)
    assert listed is not None and "not a JSON object" in listed["error"]


def _status(agent: Agent) -> dict[str, Any]:
    out = cli("agent", "status", "--state-dir", str(agent.state_dir)).stdout
    return dict(json.loads(out))


def test_status_of_a_running_agent(collector_factory: Callable[..., Collector],
                                   agent_factory: AgentFactory, tmp_path: Path) -> None:
    collector = collector_factory()
    config = tmp_path / "agent.yml"
    config.write_text("heartbeat_interval: 1s\nsensors: [fim]\n")
    www = tmp_path / "www"
    www.mkdir()
    agent = agent_factory(collector, "--config", str(config), "--watch", str(www))

    def running() -> dict[str, Any] | None:
        shown = _status(agent).get("running") or {}
        return shown if shown.get("collector") and shown.get("last_ack") else None

    shown = wait_for(running, timeout=20, message="status with its collector and an ack")
    assert shown["collector"] == collector.address
    assert shown["agent_id"] == agent.agent_id
    assert shown["stale"] is False and shown["age_seconds"] < 10
    assert set(shown["spool"]) >= {"events", "bytes", "dropped", "oldest_unacked_age_seconds"}
    fim = next(s for s in shown["sensors"] if s["name"] == "fim")
    assert fim["mode"] == "inotify" and fim["errors"] == 0
    assert agent.proc is not None
    collector_proc = collector.proc
    assert collector_proc is not None
    collector_proc.kill()   # the collector goes: the status says so, events wait
    (www / "while-away.html").write_text("x\n")

    def waiting() -> dict[str, Any] | None:
        now = _status(agent).get("running") or {}
        spool = now.get("spool") or {}
        age = spool.get("oldest_unacked_age_seconds")
        return now if now.get("collector") is None and spool.get("events") and \
            age is not None else None

    away = wait_for(waiting, timeout=20, message="status: disconnected, events unacked")
    assert away["last_error"]
    agent.proc.stop()
    assert _status(agent)["running"] is None, "a stopped agent leaves no status behind"
