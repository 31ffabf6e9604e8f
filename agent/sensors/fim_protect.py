"""Protection mode (``protect: restore``): undo unapproved changes under a web root.

The approved content of a root (``sisguard-agent fim approve PATH``) is kept compressed
in the baseline database. A path that differs from it is restored (modified or deleted
files, links and directories); a path that was never approved is moved to the quarantine
directory. Each action is its own ``restored`` / ``quarantined`` event.

Safety: we act only on a path lexically under the configured root whose parent directory
resolves (``realpath``) inside the root's real path; the parent is opened with
``O_NOFOLLOW`` and checked again through ``/proc/self/fd``, and every operation is made
relative to that directory descriptor, never following the final component. So a
symlink can neither lead us out of the root nor make us write through it.
"""

from __future__ import annotations

import errno
import json
import os
import secrets
import shutil
import stat
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from agent.ecs import Document
from agent.fim_hashing import digest_file
from agent.sensors.fim_baseline import Approved, Baseline
from agent.sensors.fim_config import INTERNAL_PREFIX
from agent.sensors.fim_events import protection_event
from agent.sensors.fim_state import FileState, Reader, file_type


class Refused(Exception):
    """Protection will not act on this path (outside the root, via a symlink, ...)."""


def within(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


def open_parent(root: str, path: str) -> int:
    """A descriptor of ``path``'s parent directory, proven to lie inside ``root``."""
    root = os.path.abspath(root)
    if path == root or not within(path, root):
        raise Refused(f"{path} is not below the protected root {root}")
    root_real = os.path.realpath(root)
    parent_real = os.path.realpath(os.path.dirname(path))
    if not within(parent_real, root_real):
        raise Refused(f"{path}: its directory resolves to {parent_real}, outside {root_real}")
    fd = os.open(parent_real, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    if not within(os.readlink(f"/proc/self/fd/{fd}"), root_real):
        os.close(fd)
        raise Refused(f"{path}: its directory moved outside {root_real}")
    return fd


@dataclass
class Protector:
    baseline: Baseline
    quarantine_dir: Path

    def differs(self, path: str, approved: Approved) -> bool:
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return True
        kind = file_type(st.st_mode)
        if (kind != approved.type or stat.S_IMODE(st.st_mode) != approved.mode
                or st.st_uid != approved.uid or st.st_gid != approved.gid):
            return True
        if kind == "file":
            return digest_file(path, ("sha256",), 1 << 62).get("sha256") != approved.sha256
        if kind == "symlink":
            return os.readlink(path) != approved.target
        return False

    def enforce(self, root: str, path: str) -> Document | None:
        """Restore or quarantine ``path`` if it differs from the approved content."""
        if os.path.basename(path).startswith(INTERNAL_PREFIX) or path == root:
            return None
        approved = self.baseline.approved(path)
        exists = os.path.lexists(path)
        try:
            if approved is None:
                if not exists:
                    return None
                dest = self.quarantine(root, path)
                return protection_event("quarantined", path, outcome="success",
                                        quarantine_path=dest,
                                        message=f"quarantined unapproved {path} to {dest}")
            if not self.differs(path, approved):
                return None
            self.restore(root, approved)
            return protection_event("restored", path, outcome="success",
                                    message=f"restored approved content of {path}")
        except (Refused, OSError) as e:
            action = "quarantined" if approved is None else "restored"
            return protection_event(action, path, outcome="failure",
                                    message=f"refused to act on {path}: {e}")

    def restore(self, root: str, a: Approved) -> None:
        dfd = open_parent(root, a.path)
        name = os.path.basename(a.path)
        try:
            try:
                st = os.stat(name, dir_fd=dfd, follow_symlinks=False)
            except FileNotFoundError:
                st = None
            if a.type == "dir":
                if st is not None and stat.S_ISDIR(st.st_mode):
                    os.chown(name, a.uid, a.gid, dir_fd=dfd, follow_symlinks=False)
                    fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW,
                                 dir_fd=dfd)
                    try:
                        os.fchmod(fd, a.mode)
                    finally:
                        os.close(fd)
                    return
                if st is not None:
                    self._quarantine_at(dfd, name, a.path)
                os.mkdir(name, a.mode, dir_fd=dfd)
                os.chown(name, a.uid, a.gid, dir_fd=dfd, follow_symlinks=False)
                return
            tmp = f"{INTERNAL_PREFIX}restore-{os.getpid()}-{secrets.token_hex(4)}"
            if a.type == "symlink":
                os.symlink(a.target or "", tmp, dir_fd=dfd)
                os.chown(tmp, a.uid, a.gid, dir_fd=dfd, follow_symlinks=False)
            elif a.type == "file":
                data = zlib.decompress(a.data) if a.data is not None else b""
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                             | os.O_CLOEXEC, 0o600, dir_fd=dfd)
                try:
                    view = memoryview(data)
                    while view:
                        view = view[os.write(fd, view):]
                    os.fchown(fd, a.uid, a.gid)
                    os.fchmod(fd, a.mode)
                    os.fsync(fd)
                finally:
                    os.close(fd)
            else:
                raise Refused(f"cannot restore a {a.type}")
            if st is not None and stat.S_ISDIR(st.st_mode):
                self._quarantine_at(dfd, name, a.path)
            os.rename(tmp, name, src_dir_fd=dfd, dst_dir_fd=dfd)
        finally:
            os.close(dfd)

    def quarantine(self, root: str, path: str) -> str:
        dfd = open_parent(root, path)
        try:
            return self._quarantine_at(dfd, os.path.basename(path), path)
        finally:
            os.close(dfd)

    def _quarantine_at(self, dfd: int, name: str, original: str) -> str:
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        box = self.quarantine_dir / f"{stamp}-{secrets.token_hex(4)}"
        box.mkdir(parents=True, mode=0o700)
        dest = box / name
        try:
            os.rename(name, dest, src_dir_fd=dfd)
        except OSError as e:
            if e.errno != errno.EXDEV:
                raise
            self._copy_out(dfd, name, dest)
        (box / "origin.json").write_text(json.dumps({"path": original, "time": stamp}))
        return str(dest)

    @staticmethod
    def _copy_out(dfd: int, name: str, dest: Path) -> None:
        """Across file systems: copy (never following links), then remove the original."""
        st = os.stat(name, dir_fd=dfd, follow_symlinks=False)
        if stat.S_ISLNK(st.st_mode):
            os.symlink(os.readlink(name, dir_fd=dfd), dest)
            os.unlink(name, dir_fd=dfd)
        elif stat.S_ISDIR(st.st_mode):
            shutil.copytree(f"/proc/self/fd/{dfd}/{name}", dest, symlinks=True)
            shutil.rmtree(name, dir_fd=dfd)
        else:
            fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW, dir_fd=dfd)
            with os.fdopen(fd, "rb") as src, open(dest, "wb") as out:
                shutil.copyfileobj(src, out, 1 << 20)
            os.unlink(name, dir_fd=dfd)


def walk(root: str) -> Iterator[os.DirEntry[str]]:
    """Every entry below ``root``, parents first, never following symlinks."""
    stack = [root]
    while stack:
        with os.scandir(stack.pop()) as it:
            for entry in it:
                yield entry
                if entry.is_dir(follow_symlinks=False):
                    stack.append(entry.path)


def approve(baseline: Baseline, reader: Reader, root: str) -> int:
    """Accept the current content of ``root`` as approved and as the baseline."""
    root = os.path.abspath(root)
    sha = Reader(algorithms=tuple(dict.fromkeys(("sha256", *reader.algorithms))),
                 hash_limit=1 << 62, xattrs=reader.xattrs, names=reader.names)
    entries: list[tuple[FileState, bytes | None]] = []
    for entry in walk(root):
        if entry.name.startswith(INTERNAL_PREFIX):
            continue
        st = entry.stat(follow_symlinks=False)
        content: bytes | None = None
        if stat.S_ISREG(st.st_mode):
            fd = os.open(entry.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
            with os.fdopen(fd, "rb") as f:
                content = f.read()
        entries.append((sha.from_stat(entry.path, st, content=content), content))
    n = baseline.approve(root, entries)
    baseline.put_many(s for s, _ in entries)
    return n
