"""Hot reload: a thread that polls a rules directory and swaps rules into the engine.

Every ``interval`` seconds it compares (mtime, size) of the rule files; on a change it
reloads them all. A file that fails to load is reported (log + ``on_errors``) and the
rules it had before stay in force; the others take effect at once.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol

from collector.detection.correlation_rules import link_correlations
from collector.detection.engine import DetectionEngine
from collector.detection.loader import load_rules, rule_files
from collector.detection.rules import LoadResult, Rule, RuleLoadError
from common.logs import get_logger

log = get_logger("sisguard.collector.detection.watcher")

Stamp = dict[str, tuple[int, int]]


class Reloadable(Protocol):
    """A DetectionEngine, or a pool of them in worker processes (workers.py)."""

    @property
    def result(self) -> LoadResult: ...

    def replace(self, result: LoadResult) -> None: ...


def _stamp(paths: Sequence[Path]) -> Stamp:
    stamp: Stamp = {}
    for path, _ruleset in rule_files(paths):
        try:
            st = path.stat()
        except OSError:
            continue
        stamp[str(path)] = (st.st_mtime_ns, st.st_size)
    return stamp


class RuleWatcher:
    def __init__(self, paths: Sequence[Path], engine: Reloadable | DetectionEngine, *,
                 interval: float = 1.0, filters: Sequence[Path] = (),
                 on_errors: Callable[[list[RuleLoadError]], None] | None = None) -> None:
        self.paths = list(paths)
        self.filters = list(filters)
        self.engine = engine
        self.interval = interval
        self.on_errors = on_errors
        self.errors: list[RuleLoadError] = []
        self.reloads = 0
        self._stamp = _stamp(self.paths + self.filters)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("watcher already started")
        self._thread = threading.Thread(target=self._run, name="sisguard-rule-watcher",
                                        daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.check()
            except Exception:  # the watcher must outlive a bug in one reload
                log.exception("rule reload failed")

    def check(self) -> list[RuleLoadError] | None:
        """Reload if any rule file changed; the errors of that reload (None: no change)."""
        stamp = _stamp(self.paths + self.filters)
        if stamp == self._stamp:
            return None
        self._stamp = stamp
        return self.reload()

    def reload(self) -> list[RuleLoadError]:
        fresh = load_rules(self.paths, filters=self.filters)
        broken = {e.where.path for e in fresh.errors}
        previous = self.engine.result.rules
        kept: list[Rule] = [r for r in previous if r.path in broken]
        rules: list[Rule] = [r for r in fresh.rules if r.path not in broken] + kept
        errors = list(fresh.errors)
        if kept:
            rules = link_correlations(rules, errors)
        self.engine.replace(LoadResult(rules=rules, errors=errors))
        self.reloads += 1
        self.errors = errors
        for error in errors:
            log.error("rule failed to load; previous version stays in force",
                      where=str(error.where), error=error.message)
        if errors and self.on_errors is not None:
            try:
                self.on_errors(errors)
            except Exception:
                log.exception("on_errors callback failed")
        log.info("rules reloaded", rules=len(rules), errors=len(errors))
        return errors
