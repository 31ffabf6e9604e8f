"""What we know about one file: stat, owner names, hashes, xattrs; and what changed.

``read_state`` never follows symlinks (lstat; a link's target is recorded as text).
``compare`` says which attributes differ; ``classify`` turns that into an action:
content (hash, size, type, link target) -> ``updated``; only metadata (mode, owner,
mtime, inode, xattrs) -> ``attributes_modified``; ctime alone -> nothing (any inode
update moves it). Directories ignore size and mtime (their entries are reported).
"""

from __future__ import annotations

import grp
import os
import pwd
import stat
from dataclasses import dataclass, field
from typing import Any

from agent.fim_hashing import Digests, digest_file, hash_bytes, xattr_digest
from common.text import os_text

# attributes compared, in the order they are reported in sisguard.fim.changed
CONTENT = ("type", "hash", "size", "target_path")
METADATA = ("mode", "uid", "gid", "owner", "group", "mtime", "inode", "xattrs")


@dataclass(slots=True)
class FileState:
    path: str
    type: str            # file, dir, symlink, other
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
    if stat.S_ISREG(mode):
        return "file"
    if stat.S_ISDIR(mode):
        return "dir"
    if stat.S_ISLNK(mode):
        return "symlink"
    return "other"


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


@dataclass(frozen=True)
class Reader:
    """Reads ``FileState``s with one configuration (hashes, size limit, xattrs)."""

    algorithms: tuple[str, ...] = ("sha256",)
    hash_limit: int = 256 * 1024 * 1024
    xattrs: bool = True
    names: NameCache = field(default_factory=NameCache)

    def from_stat(self, path: str, st: os.stat_result, *, content: bytes | None = None,
                  digests: Digests | None = None) -> FileState:
        """State from an lstat result; hashes the file (or ``content`` if given), reads
        its xattrs (unless a hash worker did both: ``digests``)."""
        kind = file_type(st.st_mode)
        state = FileState(path=path, type=kind, size=st.st_size, mode=stat.S_IMODE(st.st_mode),
                          uid=st.st_uid, gid=st.st_gid, owner=self.names.user(st.st_uid),
                          group=self.names.group(st.st_gid), mtime_ns=st.st_mtime_ns,
                          ctime_ns=st.st_ctime_ns, inode=st.st_ino)
        if digests is not None:
            state.hashes, state.xattrs = digests
            return state
        if kind == "file":
            if content is not None:
                state.hashes = hash_bytes(content, self.algorithms)
            else:
                state.hashes = digest_file(path, self.algorithms, self.hash_limit)
        elif kind == "symlink":
            state.target_path = os.readlink(path)
        if self.xattrs and kind != "symlink":
            state.xattrs = xattr_digest(path)
        return state

    def read(self, path: str) -> FileState | None:
        """The state of ``path`` now, or None if it does not exist. Raises other OSErrors."""
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return None
        except NotADirectoryError:
            return None
        try:
            return self.from_stat(path, st)
        except FileNotFoundError:
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
    return changed


def classify(changed: list[str]) -> str | None:
    if any(c in CONTENT for c in changed):
        return "updated"
    if changed:
        return "attributes_modified"
    return None
