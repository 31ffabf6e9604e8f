"""Hot reload: new and changed rules take effect; broken ones keep the old version."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from collector.detection import DetectionEngine, RuleLoadError, RuleWatcher, load_rules
from tests.collector.detection.detection_helpers import proc, rule


def wait_for(condition: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return condition()


def test_new_changed_and_broken_rules(tmp_path: Path) -> None:
    folder = tmp_path / "rules"
    folder.mkdir()
    first = folder / "a.yml"
    first.write_text(rule("sel:\n    CommandLine|contains: 'alpha'\ncondition: sel"))
    engine = DetectionEngine(load_rules([folder]))
    reported: list[list[RuleLoadError]] = []
    watcher = RuleWatcher([folder], engine, interval=0.05, on_errors=reported.append)
    watcher.start()
    try:
        assert engine.process(proc("alpha"))
        (folder / "b.yml").write_text(rule("sel:\n    CommandLine|contains: 'beta'\n"
                                           "condition: sel"))
        assert wait_for(lambda: bool(engine.process(proc("beta"))))
        first.write_text(rule("sel:\n    CommandLine|contains: 'gamma'\ncondition: sel"))
        assert wait_for(lambda: bool(engine.process(proc("gamma"))))
        assert not engine.process(proc("alpha"))
        first.write_text("title: broken\nlogsource: {product: linux}\ndetection:\n"
                         "  sel: {Image|bogus: x}\n  condition: sel\n")
        assert wait_for(lambda: bool(reported))
        (error,) = reported[0]
        assert error.where.path == str(first) and error.where.line == 4
        assert engine.process(proc("gamma")), "the previous version stays in force"
        assert engine.process(proc("beta"))
    finally:
        watcher.stop()
    assert watcher._thread is None
