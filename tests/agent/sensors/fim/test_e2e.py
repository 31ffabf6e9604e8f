"""FIM end to end: a real agent process ships to a real collector over mutual TLS."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.harness import Agent, Collector, wait_for

Doc = dict[str, Any]


def fim_events(collector: Collector, action: str | None = None,
               path: Path | None = None) -> list[Doc]:
    return [e for e in collector.events()
            if e.get("event", {}).get("dataset") == "sisguard.fim"
            and (action is None or e["event"]["action"] == action)
            and (path is None or e["file"]["path"] == str(path))]


def wait_event(collector: Collector, action: str, path: Path, agent: Agent) -> Doc:
    found = wait_for(lambda: fim_events(collector, action, path), timeout=20,
                     message=f"{action} {path}\n{agent.proc.tail() if agent.proc else ''}")
    return found[0]


def write_config(path: Path, settings: dict[str, Any]) -> Path:
    path.write_text(json.dumps({"sensor": {"fim": settings}}))   # JSON is YAML
    return path


def test_changes_live_and_while_stopped_each_reported_once(
        tmp_path: Path, collector_factory: Callable[..., Collector],
        agent_factory: Callable[..., Agent]) -> None:
    www = tmp_path / "www"
    www.mkdir()
    (www / "index.html").write_text("<h1>Sở Thông tin</h1>\n")
    cfg = write_config(tmp_path / "agent.yml", {"paths": [
        {"path": str(www), "report_changes": True, "content_checks": True}]})
    collector = collector_factory()
    agent = agent_factory(collector, "--sensors", "fim", "--config", str(cfg))

    page = www / "index.html"
    for i in range(100):
        with open(page, "a") as f:
            f.write(f"<p>{i}</p>\n")
    updated = wait_event(collector, "updated", page, agent)
    assert "+<p>99</p>" in updated["sisguard"]["fim"]["diff"]
    spam = www / "khuyen-mai.html"
    spam.write_text("<div style='display:none'><a href='//x'>Nhà cái uy tín</a></div>")
    doc = wait_event(collector, "created", spam, agent)
    assert doc["sisguard"]["content"]["signatures"] == ["spam.gambling", "spam.hidden_link"]
    assert doc["agent"]["id"] == agent.agent_id
    assert len(fim_events(collector, "updated", page)) == 1

    assert agent.proc is not None
    agent.proc.stop()
    page.write_text("defaced while the agent was down")
    spam.unlink()
    os.chmod(page, 0o600)
    (www / "new").mkdir()
    (www / "new" / "shell.php").write_text("<?php system($_GET['c']); ?>")
    agent.start()
    wait_event(collector, "updated", page, agent)
    wait_event(collector, "deleted", spam, agent)
    wait_event(collector, "created", www / "new", agent)
    shell = wait_event(collector, "created", www / "new" / "shell.php", agent)
    assert shell["sisguard"]["content"]["categories"] == ["webshell"]
    assert shell["sisguard"]["fim"]["detected_by"] == "scan"
    after = [e for e in fim_events(collector)
             if e["sisguard"]["fim"]["detected_by"] == "scan"]
    # the last event of a stop, written behind the queue's sentinel, reached the spool
    wait_for(lambda: [e for e in collector.events()
                      if e["event"]["action"] == "agent_stopped"], message="agent_stopped")
    assert sorted((e["event"]["action"], e["file"]["path"]) for e in after) == sorted([
        ("updated", str(page)), ("deleted", str(spam)), ("created", str(www / "new")),
        ("created", str(www / "new" / "shell.php"))])


def test_watch_budget_and_protection_in_a_real_agent(
        tmp_path: Path, collector_factory: Callable[..., Collector],
        agent_factory: Callable[..., Agent]) -> None:
    www = tmp_path / "www"
    for d in ("a", "b", "c"):
        (www / d).mkdir(parents=True)
    (www / "index.html").write_text("<h1>Cổng dịch vụ công</h1>\n")
    other = tmp_path / "data"
    other.mkdir()
    cfg = write_config(tmp_path / "agent.yml", {
        "max_watches": 2, "unwatched_scan_interval": "1s",
        "paths": [{"path": str(www), "protect": "restore"}, str(other)]})
    collector = collector_factory()
    agent = agent_factory(collector, "--sensors", "fim", "--config", str(cfg))
    errors = wait_for(lambda: [e for e in collector.events()
                               if e["event"]["action"] == "sensor_error"
                               and "watch limit" in e["error"]["message"]],
                      timeout=20, message="watch-limit warning")
    assert "covered by scans" in errors[0]["error"]["message"]

    (other / "late.txt").write_text("x")     # beyond the budget: found by a scan
    late = wait_event(collector, "created", other / "late.txt", agent)
    assert late["sisguard"]["fim"]["detected_by"] == "scan"

    page = www / "index.html"
    page.write_text("<h1>hacked</h1>")
    wait_event(collector, "restored", page, agent)
    assert page.read_text() == "<h1>Cổng dịch vụ công</h1>\n"
    shell = www / "up.php"
    shell.write_text("<?php @eval($_POST['x']);?>")
    wait_event(collector, "quarantined", shell, agent)
    assert not shell.exists()
