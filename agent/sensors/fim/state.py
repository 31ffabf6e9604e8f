"""What we know about one file: stat, owner names, hashes, xattrs; and what changed.

``Reader`` reads beneath the watched root and never follows symlinks (a link's target is
recorded as text; FIFOs, sockets and devices are recorded by type, never opened).
``compare`` says which attributes differ; ``classify`` turns that into an action:
content (hash, size, type, link target) -> ``updated``; only metadata (mode, owner,
mtime, inode, xattrs) -> ``attributes_modified``; ctime alone -> nothing (any inode
update moves it), except for a file without a hash (over the cap, sparse), where it is
the only witness of a write that kept the size and put the mtime back: ``updated``.
Directories ignore size and mtime (their entries are reported).
"""

from __future__ import annotations

import errno
import grp
import os
import pwd
import stat
from dataclasses import dataclass, field
from typing import Any

from agent.platform.linux.saferead import NotRegular, Outside, Replaced, Tree, kind_of
from agent.sensors.fim.hashing import (
    Digests,
    digest_fd,
    hash_bytes,
    mostly_holes,
    xattr_digest,
    xattr_digest_fd,
)
from common.text import os_text

# attributes compared, in the order they are reported in sisguard.fim.changed
CONTENT = ("type", "hash", "size", "target_path")
METADATA = ("mode", "uid", "gid", "owner", "group", "mtime", "inode", "xattrs")


@dataclass
class FileState:
    path: str
    type: str            # file, dir, symlink, fifo, socket, char_device, block_device
    size: int
    mode: int            # permission bits (S_IMODE)
    uid: int
    gid: int
    owner: str | None
    group: str | None
    mtime_ns: int
    ctime_ns: int
    inode: int
    hashes: dict[str, str] = field(default_factory=dict)
    target_path: str | None = None
    xattrs: str | None = None   # sha256 over sorted name=value pairs; None: none/unsupported
    hash_skipped: str | None = None   # why a regular file has no hash (not stored)

    def value(self, attr: str) -> Any:
        if attr == "hash":
            return self.hashes.get("sha256") or next(iter(self.hashes.values()), None)
        if attr == "mtime":
            return self.mtime_ns
        return getattr(self, attr)

    def same_stat(self, st: os.stat_result) -> bool:
        """Whether a fresh lstat looks like this state (then the hash need not be redone)."""
        return (st.st_size == self.size and st.st_mtime_ns == self.mtime_ns
                and st.st_ctime_ns == self.ctime_ns and st.st_ino == self.inode
                and stat.S_IMODE(st.st_mode) == self.mode and st.st_uid == self.uid
                and st.st_gid == self.gid and file_type(st.st_mode) == self.type)


def file_type(mode: int) -> str:
    """file, dir, symlink, fifo, socket, char_device, block_device (``saferead.kind_of``)."""
    return kind_of(mode)


class NameCache:
    """uid/gid -> name, looked up once (pwd/grp are slow: NSS, file parsing); names are
    valid text (``os_text``), as in every sensor."""

    def __init__(self) -> None:
        self._users: dict[int, str | None] = {}
        self._groups: dict[int, str | None] = {}

    def user(self, uid: int) -> str | None:
        try:
            return self._users[uid]
        except KeyError:
            try:
                name: str | None = os_text(pwd.getpwuid(uid).pw_name)
            except KeyError:
                name = None
            self._users[uid] = name
            return name

    def group(self, gid: int) -> str | None:
        try:
            return self._groups[gid]
        except KeyError:
            try:
                name: str | None = os_text(grp.getgrgid(gid).gr_name)
            except KeyError:
                name = None
            self._groups[gid] = name
            return name


READ_ATTEMPTS = 3   # a path replaced between lstat and open is examined again


def size_words(limit: int) -> str:
    """``256MiB``, ``64KiB``, ``1000 bytes``."""
    for unit, n in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if limit >= n and limit % n == 0:
            return f"{limit // n}{unit}"
    return f"{limit} bytes"


def size_cap(limit: int) -> str:
    """``"size over 256MiB cap"``: why a file was not (fully) read, in an event."""
    return f"size over {size_words(limit)} cap"


@dataclass(frozen=True)
class Reader:
    """Reads ``FileState``s with one configuration (hashes, size limit, xattrs).

    Every read goes beneath the watched root that holds the path (``roots``; the
    longest that matches), through ``agent.platform.linux.saferead``: never through a link, never
    blocking, only regular files hashed, only the inode that was ``lstat``ed.
    """

    algorithms: tuple[str, ...] = ("sha256",)
    hash_limit: int = 256 * 1024 * 1024
    xattrs: bool = True
    names: NameCache = field(default_factory=NameCache)
    roots: tuple[str, ...] = ()

    def root_of(self, path: str) -> str:
        best = ""
        for root in self.roots:
            r = os.path.abspath(root)
            if (path == r or path.startswith(r.rstrip("/") + "/")) and len(r) > len(best):
                best = r
        if not best:
            raise Outside(path, "any watched root")
        return best

    def tree(self, path: str) -> Tree:
        """The watched root holding ``path``, opened (close it: ``with``)."""
        return Tree(self.root_of(path))

    def from_stat(self, path: str, st: os.stat_result, *, content: bytes | None = None,
                  digests: Digests | None = None, tree: Tree | None = None) -> FileState:
        """State from an lstat result; hashes the file (or ``content`` if given), reads
        its xattrs (unless a hash worker did both: ``digests``)."""
        kind = file_type(st.st_mode)
        state = FileState(path=path, type=kind, size=st.st_size, mode=stat.S_IMODE(st.st_mode),
                          uid=st.st_uid, gid=st.st_gid, owner=self.names.user(st.st_uid),
                          group=self.names.group(st.st_gid), mtime_ns=st.st_mtime_ns,
                          ctime_ns=st.st_ctime_ns, inode=st.st_ino)
        if kind == "file" and st.st_size > self.hash_limit:
            state.hash_skipped = size_cap(self.hash_limit)
        elif kind == "file" and mostly_holes(st):
            state.hash_skipped = (f"sparse: {st.st_blocks * 512} of {st.st_size} bytes "
                                  "allocated")
        if digests is not None:
            state.hashes, state.xattrs = digests
            return state
        if kind == "file" and content is not None:
            state.hashes = hash_bytes(content, self.algorithms)
        elif kind not in ("file", "dir", "symlink"):
            return state   # a FIFO, socket or device: reported as such, never opened
        if tree is None:
            with self.tree(path) as t:
                return self._fill(state, path, st, t, hashed=content is not None)
        return self._fill(state, path, st, tree, hashed=content is not None)

    def _fill(self, state: FileState, path: str, st: os.stat_result, tree: Tree, *,
              hashed: bool) -> FileState:
        if state.type == "file":   # one descriptor for the hash and the xattrs
            fd = tree.open_file(path, st)
            try:
                if not hashed and state.hash_skipped is None:
                    state.hashes = digest_fd(fd, self.algorithms, self.hash_limit)
                    if not state.hashes:   # grew past the cap while it was read
                        state.hash_skipped = size_cap(self.hash_limit)
                if self.xattrs:
                    state.xattrs = xattr_digest_fd(fd)
            finally:
                os.close(fd)
        elif state.type == "symlink":
            state.target_path = tree.readlink(path)
        elif self.xattrs and state.type == "dir":
            state.xattrs = xattr_digest(tree, path, st)
        return state

    def lstat(self, path: str) -> os.stat_result | None:
        """``lstat`` beneath the watched root: None when not there (also when a link or
        a file is on the way)."""
        try:
            tree = self.tree(path)
        except (FileNotFoundError, NotADirectoryError):
            return None
        with tree:
            return tree.lstat_or_none(path)

    def exists(self, path: str) -> bool:
        return self.lstat(path) is not None

    def read(self, path: str) -> FileState | None:
        """The state of ``path`` now (beneath its root), or None if it does not exist
        there: also when a directory on the way is a symlink or not a directory. Raises
        other OSErrors."""
        try:
            tree = self.tree(path)
        except (FileNotFoundError, NotADirectoryError):
            return None
        with tree:
            for attempt in range(READ_ATTEMPTS):
                st = tree.lstat_or_none(path)
                if st is None:
                    return None
                try:
                    return self.from_stat(path, st, tree=tree)
                except FileNotFoundError:
                    return None
                except (Replaced, NotRegular):
                    if attempt == READ_ATTEMPTS - 1:
                        raise
                except OSError as e:
                    if e.errno != errno.ELOOP:
                        raise
                    # swapped for a link after the lstat: look again
        return None


def compare(old: FileState, new: FileState) -> list[str]:
    """Names of the attributes that differ (``hash``, ``size``, ``mode``, ...)."""
    changed: list[str] = []
    is_dir = old.type == "dir" and new.type == "dir"
    for attr in (*CONTENT, *METADATA):
        if is_dir and attr in ("size", "mtime"):
            continue
        if attr == "hash":
            common = old.hashes.keys() & new.hashes.keys()
            # one side unhashed (over the size limit): size/mtime decide
            if any(old.hashes[a] != new.hashes[a] for a in common):
                changed.append(attr)
            continue
        if old.value(attr) != new.value(attr):
            changed.append(attr)
    if (old.type == new.type == "file" and (not old.hashes or not new.hashes)
            and old.ctime_ns != new.ctime_ns and not any(c in CONTENT for c in changed)):
        # no hash to compare (over the cap, sparse): the bytes may have changed with the
        # size kept and the mtime put back (touch -r); only the ctime cannot be put back
        changed.append("ctime")
    return changed


def classify(changed: list[str]) -> str | None:
    if any(c in CONTENT for c in changed) or "ctime" in changed:
        return "updated"
    if changed:
        return "attributes_modified"
    return None
