"""inotify(7) watches over the configured trees, within a budget of watches.

Why not watchdog here: we need to know and bound the number of watches (one per
directory), to hear about queue overflows, and to see EACCES rather than have it
ignored. This module is the one OS resource of the real-time path: one inotify
descriptor, one thread. It reports paths (and renames with their old path) to a
callback and never reads files itself.

New directories are watched as soon as their IN_CREATE arrives; files created in them
before the watch took hold are found by the reconciler, which scans each new directory
after recording it. Directories past ``max_watches`` (or the kernel's limit) are handed to
``on_unwatched``: the sensor covers them with scans.
"""

from __future__ import annotations

import errno
import os
import select
import stat
import threading
import time
from collections import deque
from collections.abc import Callable

from agent.platform import FileEvents
from agent.platform.linux.inotify import (
    IN_ATTRIB,
    IN_CLOSE_WRITE,
    IN_CREATE,
    IN_DELETE,
    IN_DELETE_SELF,
    IN_DONT_FOLLOW,
    IN_EXCL_UNLINK,
    IN_IGNORED,
    IN_ISDIR,
    IN_MODIFY,
    IN_MOVE_SELF,
    IN_MOVED_FROM,
    IN_MOVED_TO,
    IN_ONLYDIR,
    IN_Q_OVERFLOW,
    Inotify,
)
from agent.platform.linux.saferead import Tree
from agent.sensors.fim.config import Rules
from common.logs import get_logger

log = get_logger("sisguard.agent.fim")

MASK = (IN_MODIFY | IN_ATTRIB | IN_CLOSE_WRITE | IN_MOVED_FROM | IN_MOVED_TO | IN_CREATE
        | IN_DELETE | IN_DELETE_SELF | IN_MOVE_SELF | IN_ONLYDIR | IN_DONT_FOLLOW
        | IN_EXCL_UNLINK)
MOVE_PAIRING = 0.05   # seconds an IN_MOVED_FROM waits for its IN_MOVED_TO

OnPath = Callable[[str, "str | None"], None]


class Watcher(threading.Thread):
    def __init__(self, rules: Rules, *, max_watches: int, on_path: OnPath,
                 on_overflow: Callable[[], None], on_unwatched: Callable[[list[str]], None],
                 on_denied: Callable[[str, OSError], None], stop: threading.Event,
                 events: FileEvents | None = None) -> None:
        super().__init__(name="fim-inotify", daemon=True)
        self.rules = rules
        self.max_watches = max_watches
        self.on_path, self.on_overflow = on_path, on_overflow
        self.on_unwatched, self.on_denied = on_unwatched, on_denied
        self.stop = stop
        self.events: FileEvents = events if events is not None else Inotify()
        self.lock = threading.Lock()
        self.paths: dict[int, str] = {}     # wd -> directory
        self.wds: dict[str, int] = {}       # directory -> wd
        self.unwatched: set[str] = set()
        self._moves: dict[int, tuple[str, bool, float]] = {}
        self.errors = 0

    @property
    def count(self) -> int:
        return len(self.paths)

    # watches
    def add_tree(self, top: str) -> list[str]:
        """Watch ``top`` and the directories below it (breadth first, within budget).
        Returns the subtrees that could not be watched (also given to on_unwatched)."""
        missed: list[str] = []
        queue = deque([top])
        while queue:
            directory = queue.popleft()
            if self.rules.wanted(directory, is_dir=True) is None:
                continue
            added = self._add(directory)
            if added is None:
                missed.append(directory)
                continue
            if not added:
                continue
            wp = self.rules.root_of(directory)
            if wp is None:
                continue
            try:   # listed beneath the root: a directory swapped for a link is not entered
                with Tree(wp.root) as tree, tree.listing(directory) as listing:
                    queue.extend(p for p, st in listing if stat.S_ISDIR(st.st_mode))
            except PermissionError as e:
                self.on_denied(directory, e)
            except OSError:   # gone, or a link / a file now
                continue
        if missed:
            with self.lock:
                self.unwatched.update(missed)
            self.on_unwatched(missed)
        return missed

    def _add(self, directory: str) -> bool | None:
        """True: watched now; False: not a directory any more / denied; None: no budget."""
        with self.lock:
            if directory in self.wds:
                return True
            if self.max_watches and len(self.paths) >= self.max_watches:
                return None
            try:
                wd, err = self._add_watch(directory)
            except OSError:   # not a directory beneath its root (any more)
                return False
            if wd < 0:
                if err == errno.ENOSPC:
                    return None
                if err in (errno.EACCES, errno.EPERM):
                    self.on_denied(directory, PermissionError(err, os.strerror(err)))
                return False
            self.paths[wd] = directory
            self.wds[directory] = wd
            self.unwatched.discard(directory)
            return True

    def _add_watch(self, directory: str) -> tuple[int, int]:
        """inotify_add_watch on ``directory``; below a root, through a descriptor opened
        beneath it (``/proc/self/fd/N``), so no link on the way is followed."""
        wp = self.rules.root_of(directory)
        if wp is None or directory == wp.root:
            return self.events.add_watch(os.fsencode(directory), MASK)
        with Tree(wp.root) as tree:
            dfd = tree.open_dir(directory)
        try:
            return self.events.add_watch(f"/proc/self/fd/{dfd}".encode(),
                                         MASK & ~IN_DONT_FOLLOW)
        finally:
            os.close(dfd)

    def watch_dir(self, directory: str) -> None:
        """One directory, not its subdirectories (a non-recursive root)."""
        if self._add(directory) is None:
            self.on_unwatched([directory])

    def watch_file_root(self, path: str) -> None:
        """A single file as a root: watch its directory (events filtered to the file)."""
        self._add(os.path.dirname(path))

    def _forget_under(self, prefix: str, *, remove: bool) -> None:
        with self.lock:
            for directory, wd in list(self.wds.items()):
                if directory == prefix or directory.startswith(prefix + "/"):
                    del self.wds[directory]
                    self.paths.pop(wd, None)
                    if remove:
                        self.events.rm_watch(wd)

    def _rename_under(self, src: str, dest: str) -> None:
        with self.lock:
            for directory, wd in list(self.wds.items()):
                if directory == src or directory.startswith(src + "/"):
                    new = dest + directory[len(src):]
                    del self.wds[directory]
                    self.wds[new] = wd
                    self.paths[wd] = new

    # the thread
    def run(self) -> None:
        poller = select.poll()
        poller.register(self.events.fileno(), select.POLLIN)
        try:
            while not self.stop.is_set():
                # 0.1 s while a move waits for its other half, else wake once a second
                # (to notice stop): an idle agent should not spin 10 times a second
                if poller.poll(100 if self._moves else 1000):
                    self._read()
                if self._moves:
                    self._expire_moves()
        finally:
            self.events.close()

    def _read(self) -> None:
        while True:
            events = self.events.read()
            if not events:
                return
            for wd, mask, cookie, name in events:
                try:
                    self._handle(wd, mask, cookie, name)
                except Exception as e:   # one bad event never stops the watcher
                    self.errors += 1
                    log.exception("fim inotify event failed", error=str(e))

    def _handle(self, wd: int, mask: int, cookie: int, name: bytes) -> None:
        if mask & IN_Q_OVERFLOW:
            self.on_overflow()
            return
        if mask & IN_IGNORED:
            with self.lock:
                directory = self.paths.pop(wd, None)
                if directory is not None and self.wds.get(directory) == wd:
                    del self.wds[directory]
            return
        directory = self.paths.get(wd)
        if directory is None:
            return
        path = os.path.join(directory, os.fsdecode(name)) if name else directory
        is_dir = bool(mask & IN_ISDIR)
        if mask & IN_MOVED_FROM:
            self._moves[cookie] = (path, is_dir, time.monotonic())
            return
        if mask & IN_MOVED_TO:
            moved = self._moves.pop(cookie, None)
            if moved is not None:
                src = moved[0]
                if is_dir:
                    self._rename_under(src, path)
                    self.add_tree(path)
                self._notify(path, src, is_dir)
                return
        if is_dir and mask & (IN_CREATE | IN_MOVED_TO):
            self.add_tree(path)
        if name == b"" and mask & (IN_MODIFY | IN_CLOSE_WRITE):
            return
        self._notify(path, None, is_dir or not name)

    def _notify(self, path: str, old_path: str | None, is_dir: bool) -> None:
        if (self.rules.wanted(path, is_dir=is_dir) is None
                and (old_path is None or self.rules.wanted(old_path, is_dir=is_dir) is None)):
            return
        self.on_path(path, old_path)

    def _expire_moves(self) -> None:
        now = time.monotonic()
        for cookie, (path, is_dir, when) in list(self._moves.items()):
            if now - when >= MOVE_PAIRING:
                del self._moves[cookie]
                if is_dir:
                    self._forget_under(path, remove=True)
                self._notify(path, None, is_dir)
