"""Real-time file integrity: watchdog (inotify on Linux) over the configured paths.

A burst of events on one path is coalesced: the sensor waits until the path has been
quiet for ``settle`` seconds (at most ``max_delay``) and then emits one event with the
file's state at that moment (stat + SHA-256). ``created`` followed by writes stays
``created``; a rename carries both paths.
"""

from __future__ import annotations

import hashlib
import os
import stat
import threading
import time
from dataclasses import dataclass
from fnmatch import fnmatch
from pathlib import Path
from typing import Any

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer

from agent.ecs import Document, new_event
from agent.sensors.base import Sensor, SensorContext
from common.logs import get_logger
from common.yamlconf import Duration, Size

log = get_logger("sisguard.agent.fim")

DATASET = "sisguard.fim"

# ECS event.type for each of our actions.
_ECS_TYPE = {
    "created": "creation",
    "updated": "change",
    "deleted": "deletion",
    "renamed": "change",
    "attributes_modified": "change",
}


@dataclass(frozen=True)
class FimConfig:
    paths: tuple[Path, ...] = ()
    recursive: bool = True
    exclude: tuple[str, ...] = ("*.swp", "*~", "*.tmp")
    settle: Duration = Duration(0.2)
    max_delay: Duration = Duration(1.0)
    hash_max_bytes: Size = Size(256 * 1024 * 1024)


def sha256_file(path: str, limit: int) -> str | None:
    """SHA-256 of a regular file, or None if it is larger than ``limit`` or unreadable."""
    try:
        with open(path, "rb", buffering=0) as f:
            if os.fstat(f.fileno()).st_size > limit:
                return None
            return hashlib.file_digest(f, "sha256").hexdigest()
    except OSError:
        return None


def _file_type(mode: int) -> str:
    if stat.S_ISREG(mode):
        return "file"
    if stat.S_ISDIR(mode):
        return "dir"
    if stat.S_ISLNK(mode):
        return "symlink"
    return "other"


def describe_file(path: str, *, hash_limit: int) -> dict[str, Any]:
    """ECS ``file.*`` for ``path`` as it is now (lstat: links are not followed)."""
    p = Path(path)
    info: dict[str, Any] = {"path": path, "name": p.name, "directory": str(p.parent)}
    if p.suffix:
        info["extension"] = p.suffix[1:].lower()
    try:
        st = os.lstat(path)
    except OSError:
        return info
    info.update(
        type=_file_type(st.st_mode),
        size=st.st_size,
        mode=f"{stat.S_IMODE(st.st_mode):04o}",
        uid=str(st.st_uid),
        gid=str(st.st_gid),
        inode=str(st.st_ino),
        mtime=_iso(st.st_mtime),
        ctime=_iso(st.st_ctime),
    )
    owner, group = _names(st.st_uid, st.st_gid)
    if owner:
        info["owner"] = owner
    if group:
        info["group"] = group
    if stat.S_ISREG(st.st_mode):
        digest = sha256_file(path, hash_limit)
        if digest:
            info["hash"] = {"sha256": digest}
    return info


def _iso(t: float) -> str:
    from agent.ecs import timestamp

    return timestamp(t)


def _names(uid: int, gid: int) -> tuple[str | None, str | None]:
    import grp
    import pwd

    try:
        owner: str | None = pwd.getpwuid(uid).pw_name
    except KeyError:
        owner = None
    try:
        group: str | None = grp.getgrgid(gid).gr_name
    except KeyError:
        group = None
    return owner, group


@dataclass
class _Pending:
    action: str
    first: float
    last: float
    old_path: str | None = None


class _Handler(FileSystemEventHandler):
    def __init__(self, sensor: FimSensor) -> None:
        self.sensor = sensor

    def on_any_event(self, event: FileSystemEvent) -> None:
        try:
            self.sensor.observe(event)
        except Exception as e:  # a daemon never dies on one bad event
            self.sensor.context.health.count_error(f"{type(e).__name__}: {e}")
            log.exception("fim event failed", path=str(event.src_path))


class FimSensor(Sensor):
    name = "fim"
    config: FimConfig

    def __init__(self, config: FimConfig, context: SensorContext) -> None:
        super().__init__(config, context)
        self._pending: dict[str, _Pending] = {}
        self._lock = threading.Lock()
        self._observer: Any = None
        self._flusher = threading.Thread(target=self._flush_loop, name="fim-flush", daemon=True)
        context.health.mode = "inotify"

    def start(self) -> None:
        observer = Observer()
        handler = _Handler(self)
        for path in (p.resolve() for p in self.config.paths):
            if not path.exists():
                self.context.report_error("watched path does not exist", {"file.path": str(path)})
                continue
            observer.schedule(handler, str(path), recursive=self.config.recursive)
            log.info("watching", path=str(path), recursive=self.config.recursive)
        observer.start()
        self._observer = observer
        self._flusher.start()

    def join(self, timeout: float | None = None) -> None:
        if self._observer is not None:
            self._observer.stop()
            self._observer.join(timeout)
        if self._flusher.is_alive():
            self._flusher.join(timeout)
        self._flush(force=True)

    def _excluded(self, path: str) -> bool:
        name = os.path.basename(path)
        return any(fnmatch(name, pattern) for pattern in self.config.exclude)

    def observe(self, event: FileSystemEvent) -> None:
        kind = event.event_type
        src = os.fsdecode(event.src_path)
        if kind in ("opened", "closed_no_write"):
            return
        if event.is_directory and kind in ("modified", "closed"):
            return
        now = time.monotonic()
        if kind == "moved":
            dest = os.fsdecode(event.dest_path)
            with self._lock:
                self._pending.pop(src, None)
            if not self._excluded(dest):
                self._queue(dest, "renamed", now, old_path=src)
            return
        if self._excluded(src):
            return
        action = {"created": "created", "deleted": "deleted"}.get(kind, "updated")
        self._queue(src, action, now)

    def _queue(self, path: str, action: str, now: float, old_path: str | None = None) -> None:
        with self._lock:
            pending = self._pending.get(path)
            if pending is None:
                self._pending[path] = _Pending(action, now, now, old_path)
                return
            pending.last = now
            if action == "deleted":
                if pending.action == "created":
                    # born and gone within one settle period: say both
                    self._emit(path, pending)
                self._pending[path] = _Pending("deleted", now, now)
            elif action in ("created", "renamed"):
                pending.action = action
                pending.old_path = old_path
            # "updated" after "created"/"renamed" keeps the first action

    def _flush_loop(self) -> None:
        while not self._stop.wait(0.05):
            self._flush(force=False)

    def _flush(self, *, force: bool) -> None:
        now = time.monotonic()
        ready: list[tuple[str, _Pending]] = []
        with self._lock:
            for path, pending in list(self._pending.items()):
                quiet = now - pending.last >= self.config.settle
                overdue = now - pending.first >= self.config.max_delay
                if force or quiet or overdue:
                    ready.append((path, pending))
                    del self._pending[path]
        for path, pending in ready:
            try:
                self._emit(path, pending)
            except Exception as e:
                self.context.health.count_error(f"{type(e).__name__}: {e}")
                log.exception("fim emit failed", path=path)

    def _emit(self, path: str, pending: _Pending) -> None:
        self.emit(self.build(path, pending.action, old_path=pending.old_path))

    def build(self, path: str, action: str, *, old_path: str | None = None) -> Document:
        doc = new_event(DATASET, category=["file"], type=[_ECS_TYPE[action]], action=action)
        if action == "deleted":
            p = Path(path)
            doc["file"] = {"path": path, "name": p.name, "directory": str(p.parent)}
        else:
            doc["file"] = describe_file(path, hash_limit=self.config.hash_max_bytes)
        if old_path is not None:
            doc["sisguard"] = {"fim": {"before": {"path": old_path}}}
        return doc
