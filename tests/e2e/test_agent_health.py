"""Heartbeats, `agents list`, and the agent-offline alert."""

from __future__ import annotations

import json
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.harness import REPO, Agent, Collector, cli, wait_for

AgentFactory = Callable[..., Agent]


def _listing(collector: Collector) -> str:
    return cli("collector", "agents", "list", "--data-dir", str(collector.data_dir)).stdout


def test_silent_agent_raises_offline_alert_through_the_rules(
        collector_factory: Callable[..., Collector], agent_factory: AgentFactory,
        tmp_path: Path) -> None:
    collector = collector_factory("--rules", str(REPO / "rules"))
    config = tmp_path / "agent.yml"
    config.write_text("heartbeat_interval: 1s\nsensors: [fim]\n")
    www = tmp_path / "www"
    www.mkdir()
    agent = agent_factory(collector, "--config", str(config), "--watch", str(www))
    wait_for(lambda: "online" in _listing(collector), timeout=10,
             message="the agent listed online")
    # it re-executed itself with glibc's allocator, whose free pages it can hand back
    assert agent.proc is not None and agent.proc.popen is not None
    environ = Path(f"/proc/{agent.proc.popen.pid}/environ").read_bytes().split(b"\0")
    assert b"PYTHONMALLOC=malloc" in environ

    def fim_health() -> dict[str, Any] | None:
        shown = json.loads(cli("collector", "agents", "show", "--data-dir",
                               str(collector.data_dir), agent.agent_id).stdout)
        sensors = (shown.get("heartbeat") or {}).get("sensors", [])
        fim = next((s for s in sensors if s["name"] == "fim"), None)
        return fim if fim and fim["details"].get("watches") else None

    fim: dict[str, Any] = wait_for(fim_health, timeout=10,
                                   message="FIM health in a heartbeat")
    assert fim["mode"] == "inotify"
    assert fim["details"]["watches"] == "1"
    assert int(fim["details"]["baseline_bytes"]) > 0
    row = next(line for line in _listing(collector).splitlines() if agent.agent_id in line)
    assert "test-org" in row and "127.0.0.1" in row
    assert agent.proc is not None
    agent.proc.kill(signal.SIGKILL)  # no goodbye: as if an attacker killed it

    def offline_alerts() -> list[dict[str, object]]:
        return [a for a in collector.alerts()
                if a["rule"]["name"] == "Sisguard Agent Offline"
                and a["agent"]["id"] == agent.agent_id]

    alerts = wait_for(offline_alerts, timeout=15, message="an agent-offline alert")
    assert len(alerts) == 1
    assert alerts[0]["organization"] == {"id": "test-org", "name": "test-org"}
    wait_for(lambda: "offline" in _listing(collector), timeout=5, message="listed offline")
    health = json.loads(cli("collector", "status", "--data-dir",
                            str(collector.data_dir)).stdout)
    assert health["ingest"]["events"] >= 1
    # back again: online, and no second alert for the same silence
    agent.start()
    wait_for(lambda: "online" in _listing(collector), timeout=10, message="back online")
    assert len(offline_alerts()) == 1
