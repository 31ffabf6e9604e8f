"""SigmaHQ Linux rules for the log sources our agent emits load (target >= 95 %)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from collector.detection import DetectionEngine, load_rules

SIGMA_LINUX = Path(__file__).resolve().parents[3].parent / "shared/data/sigma/linux"
EMITTED_CATEGORIES = {"process_creation", "file_event", "network_connection"}
EMITTED_SERVICES = {"auth", "sshd", "sudo"}


def emitted_rule_files() -> list[Path]:
    if not SIGMA_LINUX.is_dir():
        message = f"SigmaHQ Linux rules not found at {SIGMA_LINUX}"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(f"NOT TESTED: {message}")
    files = []
    for path in sorted(SIGMA_LINUX.rglob("*.yml")):
        source = (yaml.safe_load(path.read_text(encoding="utf-8")) or {}).get("logsource", {})
        if source.get("category") in EMITTED_CATEGORIES or source.get("service") in \
                EMITTED_SERVICES:
            files.append(path)
    return files


def test_share_of_sigmahq_rules_that_load() -> None:
    files = emitted_rule_files()
    assert len(files) > 100
    result = load_rules(files)
    failures = sorted({e.where.path for e in result.errors})
    loaded = len(files) - len(failures)
    share = loaded / len(files)
    print(f"SigmaHQ: {loaded} of {len(files)} load ({share:.1%})")
    for error in result.errors:
        print(f"  {error}")
    assert share >= 0.95, [str(e) for e in result.errors]


def test_sigmahq_rules_run_on_our_events() -> None:
    files = emitted_rule_files()
    engine = DetectionEngine(load_rules(files))
    event = {"@timestamp": "2026-01-01T00:00:00Z",
             "event": {"id": "a-1", "dataset": "sisguard.process", "type": ["start"]},
             "process": {"executable": "/usr/bin/crontab", "command_line": "crontab -l"}}
    names = {a["rule"]["name"] for a in engine.process(event)}
    assert "Crontab Enumeration" in names
