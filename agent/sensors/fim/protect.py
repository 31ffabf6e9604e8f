"""Protection mode (``protect: restore``): undo unapproved changes under a web root.

The approved content of a root (``sisguard-agent fim approve PATH``) is kept compressed
in the baseline database. A path that differs from it is restored (modified or deleted
files, links and directories); a path that was never approved is moved to the quarantine
directory. Each action is its own ``restored`` / ``quarantined`` event.

Safety: we act only on a path lexically under the configured root; its parent directory
is opened beneath the root without following any link (``agent.platform.linux.saferead``), and every
operation is made relative to that descriptor, never following the final component. So
a symlink can neither lead us out of the root nor make us write through it. Nothing is
opened that is not a regular file: a FIFO, socket or device is moved with ``rename``,
or, across file systems, recorded in ``origin.json`` and removed; regular files are
copied streamed, up to ``max_bytes`` (past it, recorded and removed). Approved content
is read streamed and kept only up to ``max_bytes`` per file (a larger file is approved
by its metadata and, within ``hash_max_bytes``, its hash; it cannot be restored).
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import secrets
import stat
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.ecs import Document
from agent.platform.linux.saferead import Tree, iter_chunks, kind_of
from agent.sensors.fim.baseline import Approved, Baseline
from agent.sensors.fim.config import INTERNAL_PREFIX
from agent.sensors.fim.events import protection_event
from agent.sensors.fim.hashing import digest_file, xattr_digest_fd
from agent.sensors.fim.state import FileState, Reader, file_type, size_cap

APPROVE_MAX_BYTES = 64 * 1024 * 1024   # content kept per approved file (restorable)
MAX_DEPTH = 64                         # directory depth copied across file systems


class Refused(Exception):
    """Protection will not act on this path (outside the root, via a symlink, ...)."""


def within(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


def open_parent(root: str, path: str, tree: Tree | None = None) -> int:
    """A descriptor of ``path``'s parent directory, opened beneath ``root`` (no link on
    the way)."""
    root = os.path.abspath(root)
    if path == root or not within(path, root):
        raise Refused(f"{path} is not below the protected root {root}")
    try:
        if tree is not None:
            return tree.open_dir(os.path.dirname(path))
        with Tree(root) as t:
            return t.open_dir(os.path.dirname(path))
    except OSError as e:
        if e.errno in (errno.ELOOP, errno.EXDEV, errno.ENOTDIR):
            raise Refused(f"{path}: its directory is not beneath {root} without a "
                          f"symlink ({e.strerror})") from e
        raise


@dataclass
class Protector:
    baseline: Baseline
    quarantine_dir: Path
    max_bytes: int = APPROVE_MAX_BYTES     # also the cap of a copy across file systems

    def differs(self, root: str, path: str, approved: Approved) -> bool:
        with Tree(root) as tree:
            st = tree.lstat_or_none(path)
            if st is None:
                return True
            kind = file_type(st.st_mode)
            if (kind != approved.type or stat.S_IMODE(st.st_mode) != approved.mode
                    or st.st_uid != approved.uid or st.st_gid != approved.gid):
                return True
            if kind == "file":
                if approved.data is None:   # approved over the cap: only small is news
                    return st.st_size <= self.max_bytes
                got = digest_file(tree, path, ("sha256",), self.max_bytes, st)
                return got.get("sha256") != approved.sha256
            if kind == "symlink":
                return tree.readlink(path) != approved.target
        return False

    def enforce(self, root: str, path: str) -> Document | None:
        """Restore or quarantine ``path`` if it differs from the approved content."""
        if os.path.basename(path).startswith(INTERNAL_PREFIX) or path == root:
            return None
        approved = self.baseline.approved(path)
        try:
            with Tree(root) as tree:   # beneath the root: a link on the way is no path
                exists = tree.lstat_or_none(path) is not None
        except OSError:
            return None   # the root itself is gone: nothing to act on
        try:
            if approved is None:
                if not exists:
                    return None
                dest = self.quarantine(root, path)
                return protection_event("quarantined", path, outcome="success",
                                        quarantine_path=dest,
                                        message=f"quarantined unapproved {path} to {dest}")
            if not self.differs(root, path, approved):
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
                    fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW
                                 | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dfd)
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
                if a.data is None:   # approved over the cap: hashed at most, not kept
                    raise Refused(f"its approved content was not kept "
                                  f"({size_cap(self.max_bytes)})")
                data = zlib.decompress(a.data)
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
        origin: dict[str, Any] = {"path": original, "time": stamp}
        try:
            os.rename(name, dest, src_dir_fd=dfd)
        except OSError as e:
            if e.errno != errno.EXDEV:
                raise
            box_fd = os.open(box, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
            try:
                origin["not_copied"] = self._copy_out(dfd, name, box_fd, name, 0)
            finally:
                os.close(box_fd)
        (box / "origin.json").write_text(json.dumps(origin))
        return str(dest)

    def _copy_out(self, dfd: int, name: str, out_fd: int, out_name: str, depth: int
                  ) -> list[dict[str, Any]]:
        """Across file systems: copy ``name`` (never following links, opening regular
        files and directories only), then remove the original. Returns what was not
        copied (FIFOs, sockets, devices; files over the cap): recorded, then removed."""
        st = os.stat(name, dir_fd=dfd, follow_symlinks=False)
        skipped: list[dict[str, Any]] = []
        kind = kind_of(st.st_mode)
        if kind == "symlink":
            os.symlink(os.readlink(name, dir_fd=dfd), out_name, dir_fd=out_fd)
            os.unlink(name, dir_fd=dfd)
        elif kind == "dir" and depth < MAX_DEPTH:
            src = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
                          | os.O_NONBLOCK, dir_fd=dfd)
            try:
                os.mkdir(out_name, 0o700, dir_fd=out_fd)
                dst = os.open(out_name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW
                              | os.O_CLOEXEC, dir_fd=out_fd)
                try:
                    for child in os.listdir(src):
                        found = self._copy_out(src, child, dst, child, depth + 1)
                        for f in found:
                            f["name"] = f"{name}/{f['name']}"
                        skipped += found
                finally:
                    os.close(dst)
            finally:
                os.close(src)
            os.rmdir(name, dir_fd=dfd)
        elif kind == "file" and st.st_size <= self.max_bytes:
            self._copy_file(dfd, name, st, out_fd, out_name)
            os.unlink(name, dir_fd=dfd)
        else:   # never opened: a FIFO blocks, a device has side effects
            why = size_cap(self.max_bytes) if kind == "file" else "not a regular file"
            skipped.append({"name": name, "type": kind, "size": st.st_size,
                            "mode": f"{stat.S_IMODE(st.st_mode):04o}", "uid": st.st_uid,
                            "reason": why})
            if kind == "dir":
                raise Refused(f"{name}: deeper than {MAX_DEPTH} directories")
            os.unlink(name, dir_fd=dfd)
        return skipped

    def _copy_file(self, dfd: int, name: str, st: os.stat_result, out_fd: int,
                   out_name: str) -> None:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY
                     | os.O_CLOEXEC, dir_fd=dfd)
        try:
            now = os.fstat(fd)
            if not stat.S_ISREG(now.st_mode) or now.st_ino != st.st_ino:
                raise Refused(f"{name}: replaced while it was quarantined")
            out = os.open(out_name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                          | os.O_CLOEXEC, 0o600, dir_fd=out_fd)
            try:
                for chunk in iter_chunks(fd, self.max_bytes):
                    view = memoryview(chunk)
                    while view:
                        view = view[os.write(out, view):]
            finally:
                os.close(out)
        finally:
            os.close(fd)


def walk(tree: Tree) -> Iterator[tuple[str, os.stat_result]]:
    """(path, lstat) of every entry below the tree's root, parents first, listed
    beneath the root (never following symlinks)."""
    stack = [tree.root]
    while stack:
        with tree.listing(stack.pop()) as listing:
            for path, st in listing:
                yield path, st
                if stat.S_ISDIR(st.st_mode):
                    stack.append(path)


def _approved_content(tree: Tree, path: str, st: os.stat_result, reader: Reader,
                      max_bytes: int) -> tuple[FileState, bytes | None]:
    """The state of a regular file and its compressed content, read once, streamed (a
    file over ``max_bytes`` is hashed within ``hash_max_bytes`` but not kept)."""
    if st.st_size > max_bytes:
        return reader.from_stat(path, st, tree=tree), None
    fd = tree.open_file(path, st)
    try:
        hashers = [hashlib.new(a) for a in reader.algorithms]
        packer = zlib.compressobj(6)
        parts: list[bytes] = []
        total = 0
        for chunk in iter_chunks(fd, max_bytes + 1):
            total += len(chunk)
            for h in hashers:
                h.update(chunk)
            parts.append(packer.compress(chunk))
        if total > max_bytes:   # grew past the cap meanwhile
            return reader.from_stat(path, st, tree=tree), None
        parts.append(packer.flush())
        xattrs = xattr_digest_fd(fd) if reader.xattrs else None
    finally:
        os.close(fd)
    digests = {a: h.hexdigest() for a, h in zip(reader.algorithms, hashers)}
    return reader.from_stat(path, st, digests=(digests, xattrs)), b"".join(parts)


def approve(baseline: Baseline, reader: Reader, root: str, *,
            max_bytes: int = APPROVE_MAX_BYTES) -> int:
    """Accept the current content of ``root`` as approved and as the baseline.

    Streamed: one file's content at a time is in memory, at most ``max_bytes`` of it
    (compressed); only the (small) states are kept for the baseline."""
    root = os.path.abspath(root)
    sha = Reader(algorithms=tuple(dict.fromkeys(("sha256", *reader.algorithms))),
                 hash_limit=reader.hash_limit, xattrs=reader.xattrs, names=reader.names,
                 roots=(root,))
    states: list[FileState] = []

    def entries(tree: Tree) -> Iterator[tuple[FileState, bytes | None]]:
        for path, st in walk(tree):
            if os.path.basename(path).startswith(INTERNAL_PREFIX):
                continue
            if stat.S_ISREG(st.st_mode):
                state, data = _approved_content(tree, path, st, sha, max_bytes)
            else:
                state, data = sha.from_stat(path, st, tree=tree), None
            states.append(state)
            yield state, data

    with Tree(root) as tree:
        n = baseline.approve(root, entries(tree))
    baseline.put_many(states)
    return n
