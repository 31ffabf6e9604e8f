"""Fault 8: a broken rule file is dropped into the rules directory mid-stream."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.faults.matrix import (
    Marker,
    Stream,
    Tally,
    alerted,
    archive_docs,
    check,
    collector_config,
    es_docs,
    log_lines,
    settle,
)
from tests.harness import Agent, Collector, read_jsonl, wait_for

pytestmark = pytest.mark.service

GOOD = """\
title: Fault matrix marker file created
id: 0f5a3c1e-8d2b-4c6a-9e71-3b2f4d5a6c7e
status: test
logsource:
    product: sisguard
    service: fim
detection:
    selection:
        event.action: created
        file.name|startswith: 'rule-'
    condition: selection
level: low
"""
# an unclosed flow sequence on line 8: the YAML parser finds out on line 9
BROKEN = """\
title: Broken on purpose
id: 1a2b3c4d-0000-4000-8000-000000000008
status: test
logsource:
    product: sisguard
    service: fim
detection:
    selection: [unclosed
    condition: selection
"""


def test_broken_rule_file_mid_stream_keeps_events_and_good_rules(
        collector_factory: Callable[..., Collector], agent_factory: Callable[..., Agent],
        es_prefix: tuple[str, str], tmp_path: Path) -> None:
    url, prefix = es_prefix
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "marker.yml").write_text(GOOD)
    config = collector_config(tmp_path / "collector.yml", es_url=url, prefix=prefix)
    collector = collector_factory("--config", str(config), "--rules", str(rules))
    marker = Marker(tmp_path / "www", "rule")
    agent = agent_factory(collector, "--sensors", "fim", "--watch", str(marker.root))
    assert agent.proc is not None and collector.proc is not None
    with Stream(marker):
        wait_for(lambda: len(marker.produced) >= 50, message="events before the broken rule")
        (rules / "broken.yml").write_text(BROKEN)
        errors = wait_for(lambda: log_lines(collector.proc.since(0) if collector.proc else "",
                                            "rule failed to load; previous version stays "
                                            "in force"),
                          timeout=30, message=f"the broken rule reported\n{collector.proc.tail()}")
        after = len(marker.produced)
        wait_for(lambda: len(marker.produced) >= after + 50, message="events after it")
    marker.write(20)
    produced = marker.paths
    late = {p for p in produced if p not in marker.produced[:after]}
    assert late
    # the error names the file and the line
    assert any(f"{rules / 'broken.yml'}:9:" in str(e.get("where")) for e in errors), errors
    tallies = settle(agent, {"archive": lambda: archive_docs(collector),
                             "elasticsearch": lambda: es_docs(url, prefix)}, produced)
    check("broken rule file mid-stream: events", tallies, produced)
    # the good rule fired once for every marked file, before and after the broken one
    events = archive_docs(collector)
    stores: dict[str, Callable[[], list[dict[str, Any]]]] = {
        "archive": lambda: list(read_jsonl(collector.data_dir / "archive", "alerts-")),
        "elasticsearch": lambda: es_docs(url, prefix, kind="alerts")}

    def every_alert() -> dict[str, Tally] | None:
        got = {name: alerted(read(), events, produced) for name, read in stores.items()}
        return got if all(t.stored >= produced for t in got.values()) else None

    alerts = wait_for(every_alert, timeout=30, interval=1.0, message="an alert per marked file")
    check("broken rule file mid-stream: alerts", alerts, produced)
