"""File integrity monitoring: baseline, real-time watches, scans, diffs, content, protection.

Threads (each owns its part; all stop on ``stop()``):

* ``fim-inotify`` (``Watcher``): one inotify descriptor over the configured trees; it
  reports paths into the debounce table.
* ``fim-flush``: a path quiet for ``settle`` seconds (or pending for ``max_delay``) is
  handed to the ``Reconciler``, which compares it with the SQLite baseline and reports
  what changed: a burst of writes gives one event.
* ``fim-scan``: the first (silent) baseline scan of each root, a reconciliation scan at
  every start (changes made while the agent was stopped), then scheduled scans (per path
  ``scan_interval``), scans after an inotify overflow, and frequent scans of directories
  past the watch budget.

While a root's first baseline scan runs, real-time events under it wait, so nothing that
existed before is mistaken for new.
"""

from __future__ import annotations

import os
import stat
import threading
import time
from dataclasses import dataclass
from typing import Any

from agent.memory import release_heap
from agent.sensors.base import Sensor, SensorContext
from agent.sensors.fim.baseline import Baseline
from agent.sensors.fim.config import FimConfig, Protect, Rules, WatchPath
from agent.sensors.fim.content import ContentChecker, load_signatures
from agent.sensors.fim.events import DATASET
from agent.sensors.fim.protect import Protector, approve
from agent.sensors.fim.reconcile import Reconciler
from agent.sensors.fim.scan import Scanner, ScanStats
from agent.sensors.fim.state import Reader
from agent.sensors.fim.watcher import Watcher
from agent.sensors.fim.yara_rules import YaraScanner, compile_rules
from agent.trust import UntrustedPath, check_path
from common.logs import get_logger

log = get_logger("sisguard.agent.fim")
# how long a baseline commit waits for the spool to take the events it goes with; past
# that (a stalled spool writer) it commits anyway rather than stall the sensor
SYNC_TIMEOUT = 5.0

__all__ = ["DATASET", "FimConfig", "FimSensor", "open_reconciler"]


OVERFLOW_REPORT_EVERY = 5.0   # seconds between two inotify-overflow sensor_errors


@dataclass
class _Pending:
    first: float
    last: float
    old_path: str | None = None


def open_reconciler(config: FimConfig, context: SensorContext) -> Reconciler:
    """Baseline, reader, signatures and protector for ``config`` (the sensor and the CLI)."""
    baseline = Baseline(context.state_dir, copies_max=config.diff_store_max)
    reader = Reader(algorithms=config.hashes, hash_limit=config.hash_max_bytes,
                    xattrs=config.xattrs, roots=tuple(wp.root for wp in config.watch_paths))
    checker = None
    if any(wp.content_checks for wp in config.watch_paths):
        signatures, errors = load_signatures(config.signatures)
        compiled, yara_errors = compile_rules(config.yara_rules)
        for e in errors:
            context.report_error(f"content signatures: {e}", {})
        for e in yara_errors:
            context.report_error(f"content checks: {e}", {})
        checker = ContentChecker(signatures, yara=None if compiled is None else YaraScanner(
            compiled, timeout=float(config.yara_timeout)))
    protector = None
    if any(wp.protect is Protect.RESTORE for wp in config.watch_paths):
        protector = Protector(baseline, config.quarantine_dir
                              or context.state_dir / "quarantine",
                              max_bytes=config.protect_max_bytes)
    return Reconciler(config=config, baseline=baseline, reader=reader, emit=context.emit,
                      report_error=context.report_error, health=context.health,
                      checker=checker, protector=protector)


class FimSensor(Sensor):
    name = "fim"
    config: FimConfig

    def __init__(self, config: FimConfig, context: SensorContext) -> None:
        super().__init__(config, context)
        self._pending: dict[str, _Pending] = {}
        self._has_pending = threading.Event()  # the flush loop sleeps while nothing is
        self._lock = threading.Lock()
        self._requests: list[tuple[WatchPath, str | None, str]] = []
        self._wake = threading.Event()
        self._initializing: set[str] = set()
        self._warned: set[str] = set()
        self._overflows = self._overflows_unreported = 0
        self._overflow_reported = float("-inf")
        self._threads: list[threading.Thread] = []
        self.rules = Rules(config)
        self.reconciler: Reconciler | None = None
        self.watcher: Watcher | None = None
        self.last_scan: ScanStats | None = None
        context.health.mode = "starting"

    # lifecycle
    def start(self) -> None:
        ctx = self.context
        ctx_emit = ctx.emit
        self.reconciler = r = open_reconciler(self.config, SensorContext(
            emit=self._count_and(ctx_emit), health=ctx.health, state_dir=ctx.state_dir,
            report_error=ctx.report_error))
        self.watcher = w = Watcher(self.rules, max_watches=self.config.max_watches,
                                   on_path=self._queue, on_overflow=self._overflow,
                                   on_unwatched=self._unwatched, on_denied=r.denied,
                                   stop=self._stop)
        for wp in self.config.watch_paths:
            root = wp.root
            if not r.baseline.initialized(root):
                self._initializing.add(root)
            if not os.path.lexists(root):
                ctx.report_error("watched path does not exist", {"file.path": root})
            elif os.path.isdir(root) and wp.recursive:
                w.add_tree(root)
            elif os.path.isdir(root):
                w.watch_dir(root)
            else:
                w.watch_file_root(root)
            self._check_parent(root)
            log.info("watching", path=root, recursive=wp.recursive, protect=wp.protect.value)
        self._threads = [w, threading.Thread(target=self._flush_loop, name="fim-flush",
                                             daemon=True),
                         threading.Thread(target=self._scan_loop, name="fim-scan", daemon=True)]
        for t in self._threads:
            t.start()
        self._update_health()

    def _check_parent(self, root: str) -> None:
        """A root whose parent another user can write could be swapped for a link (the
        root itself is opened by its path): say so, once, at start."""
        try:
            check_path(os.path.dirname(root.rstrip("/")) or "/", what="parent directory")
        except UntrustedPath as e:
            self.context.report_error(f"watched root can be replaced by another user: "
                                      f"{e.path} is {e.problem}", {"file.path": root})

    def _count_and(self, emit: Any) -> Any:
        def counted(doc: dict[str, Any]) -> None:
            self.context.health.count_event()
            path = doc.get("file", {}).get("path")
            wp = self.rules.root_of(path) if isinstance(path, str) else None
            if wp is not None and wp.tags:  # e.g. web_root: rules need no path list
                doc["tags"] = sorted({*doc.get("tags", ()), *wp.tags})
            emit(doc)
        return counted

    def stop(self) -> None:
        super().stop()
        self._has_pending.set()   # wake the flush thread
        self._wake.set()          # and the scan thread

    def join(self, timeout: float | None = None) -> None:
        self._wake.set()
        for t in self._threads:
            if t.is_alive():
                t.join(timeout)
        if self.reconciler is not None:
            self._flush(force=True)
            self.reconciler.baseline.close()
            if self.reconciler.checker is not None:
                self.reconciler.checker.close()   # its YARA helper, if any

    # real-time: debounce
    def _queue(self, path: str, old_path: str | None) -> None:
        now = time.monotonic()
        with self._lock:
            if old_path is not None:
                earlier = self._pending.pop(old_path, None)
                if earlier is not None and earlier.old_path is not None:
                    old_path = earlier.old_path   # a -> b -> c: report a -> c
            pending = self._pending.get(path)
            self._has_pending.set()
            if pending is None:
                self._pending[path] = _Pending(now, now, old_path)
            else:
                pending.last = now
                if old_path is not None:
                    pending.old_path = old_path

    def _flush_loop(self) -> None:
        # idle: asleep until a change (or stop, which sets _has_pending); settling: 50 ms
        while not self._stop.is_set():
            if not self._has_pending.wait(5.0):
                continue
            if self._stop.wait(0.05):
                break
            self._flush(force=False)
            with self._lock:
                if not self._pending:
                    self._has_pending.clear()

    def _flush(self, *, force: bool) -> None:
        now = time.monotonic()
        ready: list[tuple[str, _Pending]] = []
        with self._lock:
            for path, p in list(self._pending.items()):
                if not force and any(path == root or path.startswith(root + "/")
                                     for root in self._initializing):
                    continue
                if force or now - p.last >= self.config.settle or (
                        now - p.first >= self.config.max_delay):
                    ready.append((path, p))
                    del self._pending[path]
        assert self.reconciler is not None
        if not ready:
            return
        r = self.reconciler
        # the baseline rows of these changes are committed only once their events are in
        # the spool: an agent killed in between reports them again at its startup scan
        try:
            with r.lock, r.baseline.held() as commit:
                for path, p in ready:
                    try:
                        r.check(path, old_path=p.old_path)
                    except Exception as e:   # a daemon never dies on one bad event
                        self.context.health.count_error(f"{type(e).__name__}: {e}")
                        log.exception("fim check failed", path=path)
                commit(lambda: self.context.sync(SYNC_TIMEOUT))
        except Exception as e:   # the commit (its disk full): rows lost, never the events
            self.context.health.count_error(f"baseline commit: {type(e).__name__}: {e}")
            log.exception("fim baseline commit failed; the next scan reports these again",
                          paths=len(ready))

    # inotify trouble
    def _overflow(self) -> None:
        """The kernel's inotify queue overflowed: changes went unreported. Rescan (once
        per pending request) and say so, at most once per OVERFLOW_REPORT_EVERY seconds
        with the count of overflows since the last report and since start."""
        now = time.monotonic()
        self._overflows += 1
        self._overflows_unreported += 1
        if now - self._overflow_reported >= OVERFLOW_REPORT_EVERY:
            count, self._overflows_unreported = self._overflows_unreported, 0
            self._overflow_reported = now
            self.context.report_error(
                f"inotify queue overflow; rescanning: changes were lost, every watched path "
                f"is scanned now ({count} overflows since the last report, "
                f"{self._overflows} since start)",
                {"reason": "inotify queue overflow; rescanning", "overflows": count,
                 "overflows_total": self._overflows})
        self.request_scan(None, "overflow")

    def _unwatched(self, dirs: list[str]) -> None:
        new = [d for d in dirs if d not in self._warned]
        self._warned.update(new)
        if new:
            self.context.report_error(
                f"inotify watch limit reached (max_watches={self.config.max_watches or 'kernel'}"
                f"): {len(new)} director{'y' if len(new) == 1 else 'ies'} covered by scans "
                f"every {self.config.unwatched_scan_interval:g}s instead of in real time",
                {"file.path": new[0]})

    # scans
    def request_scan(self, wp: WatchPath | None, reason: str, top: str | None = None) -> None:
        targets = [wp] if wp is not None else list(self.config.watch_paths)
        with self._lock:   # a request already waiting is not queued twice (overflow floods)
            self._requests.extend(r for r in ((t, top, reason) for t in targets)
                                  if r not in self._requests)
        self._wake.set()

    def _scan(self, wp: WatchPath, reason: str, top: str | None = None) -> None:
        assert self.reconciler is not None
        try:
            with self.reconciler.baseline.held() as commit:   # as in _flush
                stats = Scanner(self.reconciler, self._stop, progress=True).scan(
                    wp, reason=reason, top=top)
                commit(lambda: self.context.sync(SYNC_TIMEOUT))
        except Exception as e:
            self.context.health.count_error(f"scan {wp.root}: {type(e).__name__}: {e}")
            log.exception("fim scan failed", path=wp.root)
            return
        self.last_scan = stats
        log.info("fim scan done", summary=stats.summary())
        if stats.initial and stats.completed:
            self._initializing.discard(wp.root)
            if wp.protect is Protect.RESTORE and not self.reconciler.baseline.has_approvals(
                    wp.root):
                n = approve(self.reconciler.baseline, self.reconciler.reader, wp.root,
                            max_bytes=self.config.protect_max_bytes)
                log.warning("protected root had no approved content: approved it as found",
                            path=wp.root, entries=n)
        self._update_health()

    def _release_memory(self) -> None:
        """After a scan: give back what it used (SQLite's page cache, freed heap)."""
        if self.reconciler is not None:
            self.reconciler.baseline.release_memory()
        release_heap()

    def _scan_loop(self) -> None:
        cfg = self.config
        due: dict[str, float] = {}
        for wp in cfg.watch_paths:
            if self._stop.is_set():
                return
            self._scan(wp, "initial" if wp.root in self._initializing else "startup")
            self._initializing.discard(wp.root)
            due[wp.root] = time.monotonic() + cfg.interval(wp)
        if not self._stop.is_set():   # from here every change is reported
            log.info("fim ready", roots=len(cfg.watch_paths))
        self._release_memory()
        next_unwatched = time.monotonic() + cfg.unwatched_scan_interval
        while not self._stop.is_set():
            now = time.monotonic()
            wait = min([*due.values(), next_unwatched]) - now
            self._wake.wait(max(0.05, min(wait, 30.0)))
            self._wake.clear()
            if self._stop.is_set():
                return
            with self._lock:
                requests, self._requests = self._requests, []
            for wp, top, reason in requests:
                self._scan(wp, reason, top)
            now = time.monotonic()
            for wp in cfg.watch_paths:
                if now >= due[wp.root]:
                    self._scan(wp, "scheduled")
                    due[wp.root] = time.monotonic() + cfg.interval(wp)
            if now >= next_unwatched:
                self._scan_unwatched()
                next_unwatched = time.monotonic() + cfg.unwatched_scan_interval
            self._update_health()

    def _scan_unwatched(self) -> None:
        assert self.watcher is not None
        with self.watcher.lock:
            dirs = sorted(self.watcher.unwatched)
        for directory in dirs:
            wp = self.rules.root_of(directory)
            if wp is None:
                continue
            self._scan(wp, "unwatched", top=directory)
            assert self.reconciler is not None
            st = self.reconciler.reader.lstat(directory)   # beneath the root
            if st is None or not stat.S_ISDIR(st.st_mode):
                with self.watcher.lock:
                    self.watcher.unwatched.discard(directory)
            else:
                self.watcher.add_tree(directory)   # budget may have freed up

    def _update_health(self) -> None:
        if self.reconciler is None or self.watcher is None:
            return
        try:
            entries = self.reconciler.baseline.count()
            size = self.reconciler.baseline.size_bytes()
        except Exception as e:
            self.context.health.count_error(f"baseline: {e}")
            return
        self.context.health.mode = "inotify"
        self.context.health.details = {
            "watches": str(self.watcher.count),
            "dirs_by_scan": str(len(self.watcher.unwatched)),
            "baseline_entries": str(entries),
            "baseline_bytes": str(size),
        }
