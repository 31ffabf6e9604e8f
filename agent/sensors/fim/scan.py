"""Scans: the initial baseline and reconciliation against it.

The first scan of a root records every file silently (``initial_scan`` events only if
asked), in batches of one transaction each. Later scans compare each path with the
baseline: a path whose lstat matches its record (size, mtime, ctime, inode, mode, owner)
is not re-hashed unless ``full_rehash``; changes and paths missing from disk go through
the ``Reconciler`` like real-time events. Scans are throttled in bytes/s and files/s.
"""

from __future__ import annotations

import contextlib
import os
import stat
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from typing import TextIO

from agent.platform.linux.saferead import Tree
from agent.sensors.fim.config import WatchPath
from agent.sensors.fim.events import fim_event
from agent.sensors.fim.hashing import HashWorkers, Item, Result, as_error, mostly_holes
from agent.sensors.fim.reconcile import Reconciler
from agent.sensors.fim.state import FileState

BATCH = 2000
# new files a reconciliation scan holds back until its sweep, so that one matching a
# vanished baseline entry (same inode, same hash) is reported as `renamed`; past this
# many they are reported as they are found (created, and the old path deleted)
MAX_HELD_CREATES = 10_000
_Results = list["FileState | OSError"]
_Pending = tuple[list[tuple[str, os.stat_result]], list["Future[list[Result]]"]]


@dataclass
class ScanStats:
    root: str
    reason: str
    files: int = 0
    bytes: int = 0
    hashed: int = 0
    changes: int = 0
    errors: int = 0
    seconds: float = 0.0
    initial: bool = False
    completed: bool = False

    def summary(self) -> str:
        mib = self.bytes / 1048576
        rate = mib / self.seconds if self.seconds else 0.0
        kind = "baseline" if self.initial else "reconciliation"
        return (f"{kind} scan of {self.root} ({self.reason}): {self.files} entries, "
                f"{mib:.1f} MiB, {self.hashed} hashed, {self.changes} changes, "
                f"{self.errors} errors, {self.seconds:.1f}s ({rate:.1f} MiB/s)")


class Throttle:
    """Sleeps so that bytes/s and files/s stay under their limits (0: no limit)."""

    def __init__(self, bytes_per_s: int, files_per_s: int, stop: threading.Event) -> None:
        self.bytes_per_s, self.files_per_s, self.stop = bytes_per_s, files_per_s, stop
        self.start = time.monotonic()
        self.bytes = 0
        self.files = 0

    def account(self, nbytes: int) -> None:
        self.bytes += nbytes
        self.files += 1
        wait = 0.0
        if self.bytes_per_s:
            wait = self.bytes / self.bytes_per_s
        if self.files_per_s:
            wait = max(wait, self.files / self.files_per_s)
        ahead = wait - (time.monotonic() - self.start)
        if ahead > 0.01:
            self.stop.wait(ahead)


class Progress:
    def __init__(self, stats: ScanStats, out: TextIO | None) -> None:
        self.stats, self.out = stats, out
        self.start = time.monotonic()
        self.next = self.start + 0.25

    def tick(self) -> None:
        if self.out is None:
            return
        now = time.monotonic()
        if now < self.next:
            return
        self.next = now + 0.25
        mib = self.stats.bytes / 1048576
        self.out.write(f"\rfim scan {self.stats.root}: {self.stats.files} entries, "
                       f"{mib:.0f} MiB, {mib / max(now - self.start, 1e-6):.0f} MiB/s   ")
        self.out.flush()

    def done(self) -> None:
        if self.out is not None:
            self.out.write("\r" + " " * 79 + "\r")
            self.out.flush()


class Scanner:
    def __init__(self, reconciler: Reconciler, stop: threading.Event, *,
                 progress: bool = False) -> None:
        self.r = reconciler
        self.stop = stop
        self.progress = progress
        self._tree: Tree | None = None   # the root being walked, open while it is
        # new files (and their device), by _rename_key; new directories, after them
        self._held: dict[tuple[int, int, str], tuple[FileState, int]] = {}
        self._held_dirs: list[FileState] = []

    def scan(self, wp: WatchPath, *, reason: str, top: str | None = None,
             recursive: bool | None = None, throttled: bool = True) -> ScanStats:
        cfg = self.r.config
        root = wp.root
        top = top or root
        recursive = wp.recursive if recursive is None else recursive
        initial = top == root and not self.r.baseline.initialized(root)
        stats = ScanStats(root=top, reason=reason, initial=initial)
        throttle = Throttle(cfg.scan_bytes_per_second if throttled else 0,
                            cfg.scan_files_per_second if throttled else 0, self.stop)
        out = sys.stderr if self.progress and sys.stderr.isatty() else None
        progress = Progress(stats, out)
        started = time.monotonic()
        seen: set[str] = set()
        self._held, self._held_dirs = {}, []
        chunk: list[tuple[str, os.stat_result]] = []
        pool = self._workers() if initial else None
        # the helpers end with the scan, also when it fails
        with pool if pool is not None else contextlib.nullcontext():
            pending: _Pending | None = None
            for path, st in self._walk(wp, top, recursive, stats):
                if self.stop.is_set():
                    break
                stats.files += 1
                progress.tick()
                try:
                    if initial:
                        chunk.append((path, st))
                        if len(chunk) >= BATCH:
                            pending = self._initial(wp, chunk, stats, pool, pending)
                            chunk = []
                    else:
                        seen.add(path)
                        self._reconcile(path, st, stats)
                except FileNotFoundError:
                    continue
                except PermissionError as e:
                    stats.errors += 1
                    self.r.denied(path, e)
                except OSError as e:
                    stats.errors += 1
                    self.r.health.count_error(f"scan {path}: {e}")
                if stat.S_ISREG(st.st_mode):   # the bytes read: none past the cap, if sparse
                    throttle.account(0 if st.st_size > cfg.hash_max_bytes or mostly_holes(st)
                                     else st.st_size)
            pending = self._initial(wp, chunk, stats, pool, pending)
            if pending is not None:
                self._record_initial(wp, pending[0], self._states(*pending), stats)
        progress.done()
        if not self.stop.is_set():
            if not initial:
                self._sweep(top, recursive, seen, stats)
            elif top == root:
                self.r.baseline.mark_initialized(root)
            stats.completed = True
        self._release_held(stats)   # also when stopped: a new file is never lost
        stats.seconds = time.monotonic() - started
        return stats

    def _workers(self) -> HashWorkers | None:
        """Helper processes hashing for a baseline scan (``scan_workers``; 0: none)."""
        r = self.r
        if r.config.scan_workers < 1:
            return None
        reader = r.reader
        try:
            return HashWorkers(r.config.scan_workers, reader.algorithms, reader.hash_limit,
                               reader.xattrs)
        except OSError as e:   # hash in this process, as slowly as that is
            r.health.count_error(f"hash workers: {e}")
            return None

    def _initial(self, wp: WatchPath, chunk: list[tuple[str, os.stat_result]],
                 stats: ScanStats, pool: HashWorkers | None, pending: _Pending | None
                 ) -> _Pending | None:
        """Send ``chunk``'s files to the hash workers, and record the previous chunk
        meanwhile; returns what is now in flight."""
        if pool is None:
            self._record_initial(wp, chunk, self._read_many(chunk), stats)
            return None
        files = [Item.of(path, st) for path, st in chunk if stat.S_ISREG(st.st_mode)]
        step = max(1, len(files) // (2 * len(pool)))
        parts = [pool.submit(wp.root, files[i:i + step])
                 for i in range(0, len(files), step)]
        if pending is not None:
            self._record_initial(wp, pending[0], self._states(*pending), stats)
        return (chunk, parts)

    def _record_initial(self, wp: WatchPath, chunk: list[tuple[str, os.stat_result]],
                        results: _Results, stats: ScanStats) -> None:
        batch: list[FileState] = []
        if len(chunk) != len(results):
            raise RuntimeError(f"scan: {len(results)} results for {len(chunk)} paths")
        for (path, st), state in zip(chunk, results):
            if isinstance(state, OSError):
                if not isinstance(state, FileNotFoundError):
                    stats.errors += 1
                    if isinstance(state, PermissionError):
                        self.r.denied(path, state)
                    else:
                        self.r.health.count_error(f"scan {path}: {state}")
                continue
            if state.hashes:
                stats.hashed += 1
                stats.bytes += st.st_size
            state = self.r.keep_copy(wp, state)
            batch.append(state)
            if self.r.config.initial_scan_events:
                self.r.emit(fim_event("initial_scan", new=state, detected_by="initial_scan"))
        if batch:
            self.r.baseline.put_many(batch)

    def _states(self, chunk: list[tuple[str, os.stat_result]],
                parts: list[Future[list[Result]]]) -> _Results:
        """States for ``chunk``: its files hashed by the workers, the rest read here."""
        digests: list[Result] = []
        for part in parts:
            try:
                digests.extend(part.result())
            except OSError as e:   # a worker died: hash its share here
                self.r.health.count_error(str(e))
                digests = []
                break
        files = iter(digests)
        out: _Results = []
        for path, st in chunk:
            if digests and stat.S_ISREG(st.st_mode):
                result = next(files)
                if isinstance(result[0], int):
                    out.append(as_error(result, path))
                    continue
                try:
                    out.append(self.r.reader.from_stat(path, st, digests=result,
                                                       tree=self._tree))
                except OSError as e:
                    out.append(e)
            else:
                out.append(self._read_or_error((path, st)))
        return out

    def _read_many(self, items: list[tuple[str, os.stat_result]]
                   ) -> list[FileState | OSError]:
        return [self._read_or_error(item) for item in items]

    def _read_or_error(self, item: tuple[str, os.stat_result]) -> FileState | OSError:
        try:
            return self.r.reader.from_stat(*item, tree=self._tree)
        except OSError as e:
            return e

    def _reconcile(self, path: str, st: os.stat_result, stats: ScanStats) -> None:
        old = self.r.baseline.get(path)
        if old is not None and not self.r.config.full_rehash and old.same_stat(st):
            return
        state = self.r.reader.from_stat(path, st, tree=self._tree)
        stats.hashed += 1
        stats.bytes += st.st_size if state.type == "file" else 0
        with self.r.lock:
            again = (self._tree.lstat_or_none(path) if self._tree is not None
                     else self.r.reader.lstat(path))
            if again is None or (again.st_mtime_ns, again.st_ctime_ns, again.st_size,
                                 again.st_ino) != (st.st_mtime_ns, st.st_ctime_ns,
                                                   st.st_size, st.st_ino):
                return   # changing under us: the real-time path or the next scan has it
            key = _rename_key(state)
            room = len(self._held) + len(self._held_dirs) < MAX_HELD_CREATES
            if old is None and room and key is not None and key not in self._held:
                self._held[key] = (state, st.st_dev)   # created, or the far end of a
                return                                 # rename: the sweep tells
            if old is None and room and state.type == "dir":
                self._held_dirs.append(state)   # its files are walked (and held) next;
                return                          # recorded after them, it reports no copy
            if self.r.record(path, state, detected_by="scan") is not None:
                stats.changes += 1

    def _release_held(self, stats: ScanStats) -> None:
        """New files no vanished entry claimed, then new directories: reported as
        created (a directory's entries are in the baseline by then: not reported twice)."""
        held, self._held = self._held, {}
        dirs, self._held_dirs = self._held_dirs, []
        for state in [s for s, _ in held.values()] + dirs:
            with self.r.lock:
                if self.r.record(state.path, state, detected_by="scan") is not None:
                    stats.changes += 1

    def _sweep(self, top: str, recursive: bool, seen: set[str], stats: ScanStats) -> None:
        """Baseline entries that the walk did not find are gone: renamed first (a file
        that moved while the agent was stopped, also with its directory), then the rest
        deleted, parents first."""
        candidates = [top, *self.r.baseline.paths_under(top)]
        gone = [path for path in sorted(candidates)
                if path not in seen and (recursive or path == top
                                         or os.path.dirname(path) == top)]
        if self._held:
            for path in gone:
                with self.r.lock:
                    old = self.r.baseline.get(path)
                    key = _rename_key(old) if old is not None else None
                    new = self._held.get(key) if key is not None else None
                    if (old is None or key is None or new is None
                            or self.r.reader.exists(path) or self._device_of(path) != new[1]):
                        continue
                    if self.r.renamed_while_away(path, old, new[0]):
                        del self._held[key]
                        stats.changes += 1
        for path in gone:
            with self.r.lock:
                if self.r.reader.exists(path):
                    continue
                old = self.r.baseline.get(path)
                if old is not None:
                    self.r.deleted(path, old, detected_by="scan")
                    stats.changes += 1

    def _device_of(self, gone: str) -> int | None:
        """The device a vanished path was on: that of the nearest directory above it that
        is still there (a file is on its directory's file system; rename(2) never crosses
        one). The baseline keeps no device; an inode number alone is per file system."""
        directory = os.path.dirname(gone)
        for _ in range(64):
            st = self.r.reader.lstat(directory)
            if st is not None:
                return st.st_dev if stat.S_ISDIR(st.st_mode) else None
            parent = os.path.dirname(directory)
            if parent == directory:
                return None
            directory = parent
        return None

    def _walk(self, wp: WatchPath, top: str, recursive: bool, stats: ScanStats
              ) -> Iterator[tuple[str, os.stat_result]]:
        """(path, lstat) for ``top`` and below, pruning excluded directories. Every
        directory is listed through a descriptor opened beneath the root (``saferead``):
        one swapped for a symlink is not entered, it is seen as the link it now is."""
        r = self.r
        try:
            tree = Tree(wp.root)
        except FileNotFoundError:
            return
        except PermissionError as e:
            stats.errors += 1
            r.denied(wp.root, e)
            return
        with tree:
            self._tree = tree
            try:
                yield from self._walk_tree(wp, tree, top, recursive, stats)
            finally:
                self._tree = None

    def _walk_tree(self, wp: WatchPath, tree: Tree, top: str, recursive: bool,
                   stats: ScanStats) -> Iterator[tuple[str, os.stat_result]]:
        r = self.r
        try:
            st = tree.lstat_or_none(top)
        except PermissionError as e:
            stats.errors += 1
            r.denied(top, e)
            return
        if st is None:
            return
        if top != wp.root and r.rules.excluded(wp, top, is_dir=stat.S_ISDIR(st.st_mode)):
            return
        yield top, st
        if not stat.S_ISDIR(st.st_mode):
            return
        stack = [top]
        while stack:
            directory = stack.pop()
            try:   # streamed: a directory of millions of entries is never a list
                with tree.listing(directory) as listing:
                    for path, est in listing:
                        is_dir = stat.S_ISDIR(est.st_mode)
                        if r.rules.excluded(wp, path, is_dir=is_dir):
                            continue
                        yield path, est
                        if is_dir and recursive:
                            stack.append(path)
            except (FileNotFoundError, NotADirectoryError):
                continue
            except PermissionError as e:
                stats.errors += 1
                r.denied(directory, e)
                continue
            except OSError as e:   # ELOOP: swapped for a link since it was listed
                stats.errors += 1
                r.health.count_error(f"scan {directory}: {e}")
                continue


def _rename_key(state: FileState) -> tuple[int, int, str] | None:
    """What a file keeps through a rename(2): its inode, its mtime and its content
    (regular files with a hash only). File systems reuse a freed inode at once, so
    ``rm a; touch b`` gives ``b`` the inode (and, when both are empty, the hash) that ``a``
    had: only the mtime, which a rename keeps and a new file does not, tells them apart."""
    digest = state.value("hash") if state.type == "file" else None
    return (state.inode, state.mtime_ns, digest) if digest else None
