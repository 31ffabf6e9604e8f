"""Compare a path with the baseline, record it, and report what changed.

Real-time events and scans both end here, under one lock: whatever saw a change first
updates the baseline, so the other finds nothing to say and nothing is reported twice.
A reported change is enriched (diff, content checks) and then, under a protected root,
enforced (restore / quarantine).
"""

from __future__ import annotations

import itertools
import os
import sqlite3
import stat
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from agent.ecs import Document
from agent.sensors.base import SensorHealth
from agent.sensors.fim.baseline import Baseline
from agent.sensors.fim.config import FimConfig, Protect, Rules, WatchPath
from agent.sensors.fim.content import ContentChecker
from agent.sensors.fim.diff import Snapshot, is_nodiff, private_link, read_for_diff, unified
from agent.sensors.fim.events import file_fields, fim_event
from agent.sensors.fim.hashing import hash_bytes
from agent.sensors.fim.protect import Protector
from agent.sensors.fim.state import FileState, Reader, classify, compare, size_cap, size_words

ReportError = Callable[[str, dict[str, Any]], None]
MAX_NEW_DIR_ENTRIES = 100_000   # entries of a new directory reported at once (a scan
                                # finds the rest)


@dataclass
class Reconciler:
    config: FimConfig
    baseline: Baseline
    reader: Reader
    emit: Callable[[Document], None]
    report_error: ReportError
    health: SensorHealth
    checker: ContentChecker | None = None
    protector: Protector | None = None
    rules: Rules = field(init=False)
    lock: threading.RLock = field(default_factory=threading.RLock)
    _denied: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.rules = Rules(self.config)

    # reading
    def read(self, path: str) -> FileState | None:
        """Current state, or None if gone; permission errors are reported once per path."""
        try:
            state = self.reader.read(path)
        except PermissionError as e:
            self.denied(path, e)
            raise
        self._denied.discard(path)
        return state

    def denied(self, path: str, e: OSError) -> None:
        if path not in self._denied and len(self._denied) < 10_000:
            self._denied.add(path)
            self.report_error(f"permission denied: {e.strerror}", {"file.path": path})
        else:
            self.health.count_error(f"permission denied: {path}")

    # real-time entry point
    def check(self, path: str, *, old_path: str | None = None,
              detected_by: str = "realtime") -> None:
        with self.lock:
            try:
                cur = self.read(path)
            except PermissionError:
                return
            if old_path is not None and old_path != path:
                moved = self.baseline.get(old_path)
                if moved is not None and not self.reader.exists(old_path):
                    self._moved(old_path, moved, path, cur, detected_by)
                    return
            self.record(path, cur, detected_by=detected_by)

    def record(self, path: str, cur: FileState | None, *, detected_by: str,
               old: FileState | None = None, known_old: bool = False) -> str | None:
        """Compare ``cur`` with the baseline, update it, report; returns the action."""
        with self.lock:
            if not known_old:
                old = self.baseline.get(path)
            if cur is None:
                if old is not None:
                    self.deleted(path, old, detected_by=detected_by)
                    return "deleted"
                return None
            wp = self.rules.wanted(path, is_dir=cur.type == "dir")
            if wp is None:
                if old is not None:
                    self.baseline.delete([path])
                return None
            if old is None:
                self._remember(cur)
                self.report("created", wp, cur, None, [], detected_by=detected_by)
                if cur.type == "dir":
                    self.scan_new_dir(path, detected_by)
                return "created"
            changed = compare(old, cur)
            action = classify(changed)
            if old.type == "dir" and cur.type != "dir":
                self._forget_tree(path, detected_by, report=True)
            self._remember(cur)
            if action is not None:
                self.report(action, wp, cur, old, changed, detected_by=detected_by)
            return action

    def _remember(self, state: FileState) -> None:
        """Record ``state``; a baseline that cannot take it (its disk full) costs the
        baseline entry, never the report: the next scan reports the change again."""
        try:
            self.baseline.put(state)
        except sqlite3.Error as e:
            self.health.count_error(f"baseline {state.path}: {e}")

    def deleted(self, path: str, old: FileState, *, detected_by: str) -> None:
        """``path`` is gone: report it and, for a directory, everything it held."""
        wp = self.rules.root_of(path)
        gone = self._forget_tree(path, detected_by, report=True) if old.type == "dir" else []
        self.baseline.delete([path])
        self.baseline.copy_delete(path)
        self.emit(fim_event("deleted", new=None, old=old, detected_by=detected_by))
        if wp is not None and wp.protect is Protect.RESTORE:
            for p in sorted([path, *gone]):   # parents first
                self.enforce(wp, p)

    def _forget_tree(self, path: str, detected_by: str, *, report: bool) -> list[str]:
        children = self.baseline.under(path)
        for child in children:
            if report:
                self.emit(fim_event("deleted", new=None, old=child, detected_by=detected_by))
            self.baseline.copy_delete(child.path)
        self.baseline.delete(c.path for c in children)
        return [c.path for c in children]

    def _moved(self, old_path: str, moved: FileState, path: str, cur: FileState | None,
               detected_by: str) -> None:
        new_wp = self.rules.wanted(path, is_dir=moved.type == "dir") if cur else None
        if cur is None or new_wp is None:   # moved out of sight: as good as deleted
            self.deleted(old_path, moved, detected_by=detected_by)
            return
        children = self.baseline.under(old_path) if moved.type == "dir" else []
        self._rename_one(old_path, moved, path, cur, new_wp, detected_by)
        for child in children:
            new_child = path + child.path[len(old_path):]
            try:
                child_cur = self.reader.read(new_child)
            except OSError:
                child_cur = None
            if child_cur is None:
                self.baseline.delete([child.path])
                self.emit(fim_event("deleted", new=None, old=child, detected_by=detected_by))
            else:
                self._rename_one(child.path, child, new_child, child_cur, new_wp, detected_by)
        old_wp = self.rules.root_of(old_path)
        if old_wp is not None and old_wp.protect is Protect.RESTORE:
            self.enforce(old_wp, old_path)
            for child in children:
                self.enforce(old_wp, child.path)

    def renamed_while_away(self, old_path: str, old: FileState, cur: FileState) -> bool:
        """A reconciliation scan found ``old_path`` gone and ``cur`` new with its inode and
        hash (a rename made while the agent was stopped): reported as ``renamed`` with
        both paths. False (nothing done) when ``cur`` is not wanted or is known already."""
        with self.lock:
            wp = self.rules.wanted(cur.path, is_dir=False)
            if wp is None or self.baseline.get(cur.path) is not None:
                return False
            self._rename_one(old_path, old, cur.path, cur, wp, "scan")
            old_wp = self.rules.root_of(old_path)
            if old_wp is not None and old_wp.protect is Protect.RESTORE:
                self.enforce(old_wp, old_path)
            return True

    def _rename_one(self, old_path: str, old: FileState, path: str, cur: FileState,
                    wp: WatchPath, detected_by: str) -> None:
        changed = [c for c in compare(old, cur) if c != "inode"]
        copy = self.baseline.copy_get(old_path)
        self.baseline.delete([old_path])
        self.baseline.copy_delete(old_path)
        if copy is not None:
            self.baseline.copy_put(path, copy)
        self.baseline.put(cur)
        self.report("renamed", wp, cur, old, changed, old_path=old_path,
                    detected_by=detected_by)

    def scan_new_dir(self, path: str, detected_by: str) -> None:
        """A new directory: whatever was created in it before its watch is reported now
        (listed through a descriptor opened beneath the root: a directory swapped for a
        link is not listed)."""
        try:
            with self.reader.tree(path) as tree, tree.listing(path) as listing:
                names = [p for p, _ in itertools.islice(listing, MAX_NEW_DIR_ENTRIES)]
        except OSError as e:
            if isinstance(e, PermissionError):
                self.denied(path, e)
            return
        for child in names:
            try:
                cur = self.read(child)
            except OSError:
                continue
            self.record(child, cur, detected_by=detected_by)

    # reporting
    def report(self, action: str, wp: WatchPath, cur: FileState, old: FileState | None,
               changed: list[str], *, detected_by: str, old_path: str | None = None) -> None:
        doc = fim_event(action, new=cur, old=old, changed=changed, old_path=old_path,
                        detected_by=detected_by)
        # a rename that changes the extension (upload.jpg -> upload.php) makes the same
        # bytes something else to the web server: checked as if new
        content_changed = (action == "created" or {"hash", "size", "ctime"} & set(changed)
                           or (action == "renamed" and old_path is not None
                               and _extension(old_path) != _extension(cur.path)))
        if cur.type == "file" and content_changed:
            try:
                self._enrich(doc, wp, cur, old_path or cur.path)
            except (OSError, sqlite3.Error) as e:   # sqlite3: the copy store's disk full
                self.health.count_error(f"enrich {cur.path}: {e}")
        self.emit(doc)
        if wp.protect is Protect.RESTORE:
            self.enforce(wp, cur.path)

    def _enrich(self, doc: Document, wp: WatchPath, cur: FileState, copy_key: str) -> None:
        cfg = self.config
        fim: dict[str, Any] = doc["sisguard"]["fim"]
        if cur.hash_skipped is not None:
            fim["hash_skipped"] = cur.hash_skipped
        if wp.report_changes and is_nodiff(cur.path, cfg.nodiff):
            fim["diff_skipped"] = "nodiff"
        elif wp.report_changes and cur.size > cfg.diff_max_file:
            fim["diff_skipped"] = size_cap(cfg.diff_max_file)
        elif wp.report_changes:
            with self.reader.tree(cur.path) as tree:
                snap = read_for_diff(tree, cur.path, cfg.diff_max_file, ino=cur.inode)
            if snap is not None:
                previous = self.baseline.copy_get(copy_key)
                if previous is not None and previous != snap.content:
                    fim["diff"] = unified(cur.path, previous, snap.content,
                                          max_bytes=cfg.diff_max_bytes)
                self.baseline.copy_put(cur.path, snap.content)
                read = self._as_read(cur, snap)
                if read is not cur:   # written again since it was hashed: say what we diffed
                    self.baseline.put(read)
                    doc["file"].update(file_fields(read))
        ext = os.path.splitext(cur.path)[1][1:].lower()
        if wp.content_checks and self.checker is not None and ext in cfg.content_extensions:
            # the inode hashed, beneath the root, the first content_max_bytes of it
            with self.reader.tree(cur.path) as tree:
                data, st = tree.read(cur.path, cfg.content_max_bytes, ino=cur.inode)
            if cur.size > cfg.content_max_bytes:
                fim["content_capped"] = (f"checked the first {size_words(cfg.content_max_bytes)}"
                                         " (content_max_bytes cap)")
            match = self.checker.check(data, ext)
            if match is not None:
                doc["sisguard"]["content"] = found = match.fields()
                if private_link(st):
                    found["excerpt"] = "(not shown: a hard link others may not read)"

    def keep_copy(self, wp: WatchPath, state: FileState) -> FileState:
        """During a silent baseline scan: keep the copy a later diff will need.

        Returns the state to record. The copy is read after the hash, so a file being
        written meanwhile would leave a copy newer than its recorded hash; the next change
        would then diff against bytes it already contains and show nothing. The state
        returned is the copy's (its hash and size), so the two always describe the same
        bytes, and a write after the copy is reported with its diff.
        """
        if (wp.report_changes and state.type == "file"
                and not is_nodiff(state.path, self.config.nodiff)):
            try:
                with self.reader.tree(state.path) as tree:
                    snap = read_for_diff(tree, state.path, self.config.diff_max_file,
                                         ino=state.inode)
            except OSError:
                snap = None
            if snap is not None:
                self.baseline.copy_put(state.path, snap.content)
                return self._as_read(state, snap)
        return state

    def _as_read(self, state: FileState, snap: Snapshot) -> FileState:
        """``state`` if it describes the bytes of ``snap``, else the state they were read in.

        An unchanged stat (size, mtime, ctime, inode) is trusted as the scans trust it; only
        a file that moved on between the hash and the copy is hashed a second time.
        """
        if (not state.hashes or state.same_stat(snap.stat)
                or hash_bytes(snap.content, tuple(state.hashes)) == state.hashes):
            return state
        try:
            return self.reader.from_stat(state.path, snap.stat, content=snap.content)
        except OSError:
            return state

    def enforce(self, wp: WatchPath, path: str) -> None:
        if self.protector is None:
            return
        doc = self.protector.enforce(wp.root, path)
        if doc is None:
            return
        self.emit(doc)
        # what we did is the new state: record it silently
        try:
            now = self.reader.read(path)
        except OSError:
            now = None
        if now is None:
            self._forget_tree(path, "protection", report=False)
            self.baseline.delete([path])
        else:
            self.baseline.put(now)
            if now.type == "dir":
                self._record_tree_silently(path)

    def _record_tree_silently(self, path: str) -> None:
        """A directory protection restored or left: its entries as they are now."""
        try:
            with self.reader.tree(path) as tree:
                stack = [path]
                while stack:
                    directory = stack.pop()
                    with tree.listing(directory) as listing:
                        for child, st in listing:
                            self.baseline.put(self.reader.from_stat(child, st, tree=tree))
                            if stat.S_ISDIR(st.st_mode):
                                stack.append(child)
        except OSError as e:
            self.health.count_error(f"after protection, {path}: {e}")


def _extension(path: str) -> str:
    return os.path.splitext(path)[1].lower()
