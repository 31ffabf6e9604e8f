"""Reads beneath a watched root, never through a link, never blocking on a file.

Every open, stat and listing the FIM does under a watched root goes through a descriptor
of that root, component by component: ``openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)``
where the kernel has it (Linux 5.6+, called through ``syscall(437)``), otherwise a walk
that opens each directory with ``O_NOFOLLOW`` relative to the one before. A symlink (or a
``..``) anywhere below the root makes the path not exist for us (``ELOOP``, ``EXDEV``):
a directory swapped for a link to ``/root`` gives an event about the swap, never what
the link points to. Files are opened ``O_NONBLOCK | O_NOCTTY``, then ``fstat``ed: only a
regular file whose (device, inode) is the one that was ``lstat``ed is read, within a cap.

The root path itself is the operator's (from the configuration) and is resolved as
usual; a root that is a file is reached through its parent directory.

This module imports only the standard library and runs on Python 3.9 (the hash helper
processes use it).
"""

from __future__ import annotations

import ctypes
import errno
import os
import platform
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

READ_CHUNK = 1 << 20

RESOLVE_NO_XDEV, RESOLVE_NO_MAGICLINKS, RESOLVE_NO_SYMLINKS, RESOLVE_BENEATH = 1, 2, 4, 8
_SYS_OPENAT2 = {"x86_64": 437, "aarch64": 437}
_OPEN = os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK | os.O_NOCTTY
_DIR = os.O_RDONLY | os.O_DIRECTORY | _OPEN


class NotRegular(OSError):
    """Not a regular file (a FIFO, socket, device, directory, link): never read."""

    def __init__(self, path: str, kind: str) -> None:
        super().__init__(errno.EINVAL, f"not a regular file ({kind})", path)
        self.kind = kind


class Replaced(OSError):
    """The path now names another inode than the one the caller stat'ed."""

    def __init__(self, path: str) -> None:
        super().__init__(errno.ESTALE, "replaced since it was examined", path)


class Outside(OSError):
    """The path is not lexically below the root (or has a ``..`` / ``.`` component)."""

    def __init__(self, path: str, root: str) -> None:
        super().__init__(errno.EXDEV, f"not below the watched root {root}", path)


def kind_of(mode: int) -> str:
    """``file.type`` for a mode: file, dir, symlink, fifo, socket, char_device,
    block_device (never read: all but ``file``)."""
    if stat.S_ISREG(mode):
        return "file"
    if stat.S_ISDIR(mode):
        return "dir"
    if stat.S_ISLNK(mode):
        return "symlink"
    if stat.S_ISFIFO(mode):
        return "fifo"
    if stat.S_ISSOCK(mode):
        return "socket"
    if stat.S_ISCHR(mode):
        return "char_device"
    if stat.S_ISBLK(mode):
        return "block_device"
    return "other"


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64),
                ("resolve", ctypes.c_uint64)]


class _Openat2:
    """``openat2`` through libc's ``syscall``; ``available`` turns False on ENOSYS."""

    def __init__(self) -> None:
        self.number = _SYS_OPENAT2.get(platform.machine())
        self.available = self.number is not None
        self.verified = False   # it has opened something: an EPERM is a real one
        self._syscall: Any = None
        self._how: dict[int, _OpenHow] = {}   # by flags: read-only for the kernel
        if self.available:
            try:
                syscall = ctypes.CDLL(None, use_errno=True).syscall
                syscall.restype = ctypes.c_long
                syscall.argtypes = [ctypes.c_long, ctypes.c_int, ctypes.c_char_p,
                                    ctypes.c_void_p, ctypes.c_size_t]
                self._syscall = syscall
            except (OSError, AttributeError):
                self.available = False

    def __call__(self, dir_fd: int, rel: str, flags: int) -> int:
        """A descriptor, or -1 when the kernel has no openat2 (then ``available``
        is False from now on). Raises OSError otherwise."""
        how = self._how.get(flags)
        if how is None:
            how = self._how[flags] = _OpenHow(flags, 0, RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)
        fd = self._syscall(self.number, dir_fd, os.fsencode(rel), ctypes.addressof(how),
                           ctypes.sizeof(how))
        if fd >= 0:
            return int(fd)
        err = ctypes.get_errno()
        if err in (errno.ENOSYS, errno.E2BIG):   # an old kernel, or seccomp says no
            self.available = False
            return -1
        raise OSError(err, os.strerror(err), rel)


_openat2 = _Openat2()


def openat2_available() -> bool:
    return _openat2.available


def _components(rel: str) -> list[str]:
    parts = [p for p in rel.split("/") if p]
    if any(p in (".", "..") for p in parts):
        raise Outside(rel, "(root)")
    return parts


def open_beneath(root_fd: int, rel: str, flags: int = os.O_RDONLY, *,
                 use_openat2: bool = True) -> int:
    """A descriptor of ``rel`` (relative to the directory ``root_fd``), resolved beneath
    it without following any symlink; always non-blocking and close-on-exec. Raises
    OSError (``ELOOP`` for a link on the way, ``ENOTDIR``, ``ENOENT`` ...)."""
    parts = _components(rel)
    flags |= _OPEN
    if not parts:
        return os.open(".", flags & ~os.O_NOFOLLOW, dir_fd=root_fd)
    if use_openat2 and _openat2.available:
        try:
            fd = _openat2(root_fd, "/".join(parts), flags)
        except PermissionError:
            if _openat2.verified:
                raise
            # an old seccomp profile answers EPERM for every syscall it does not know:
            # if the walk may open it, openat2 is what was refused
            fd = _walk(root_fd, parts, flags, rel)
            _openat2.available = False
            return fd
        if fd >= 0:
            _openat2.verified = True
            return fd
    return _walk(root_fd, parts, flags, rel)


def _walk(root_fd: int, parts: list[str], flags: int, rel: str) -> int:
    """The fallback: each directory opened ``O_NOFOLLOW`` relative to the one before."""
    current = root_fd
    try:
        for part in parts[:-1]:
            nxt = _open_dir_step(current, part, rel)
            if current != root_fd:
                os.close(current)
            current = nxt
        return os.open(parts[-1], flags, dir_fd=current)
    finally:
        if current != root_fd:
            os.close(current)


def _open_dir_step(dir_fd: int, name: str, rel: str) -> int:
    """One directory of the walk; a symlink is ``ELOOP`` as with openat2 (O_DIRECTORY
    alone would say ENOTDIR)."""
    try:
        return os.open(name, _DIR, dir_fd=dir_fd)
    except NotADirectoryError as e:
        if stat.S_ISLNK(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode):
            raise OSError(errno.ELOOP, os.strerror(errno.ELOOP), rel) from e
        raise


def open_root(root: str) -> tuple[int, bool]:
    """A descriptor of the directory that anchors ``root`` (itself, or its parent when
    the root is not a directory), and whether it is the root itself."""
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC | os.O_NONBLOCK
    try:
        return os.open(root, flags), True
    except NotADirectoryError:
        return os.open(os.path.dirname(root) or "/", flags), False


def read_capped(fd: int, cap: int) -> bytes:
    """At most ``cap`` bytes from ``fd``, read in bounded chunks."""
    out: list[bytes] = []
    left = cap
    while left > 0:
        chunk = os.read(fd, min(left, READ_CHUNK))
        if not chunk:
            break
        out.append(chunk)
        left -= len(chunk)
    return b"".join(out)


def iter_chunks(fd: int, cap: int) -> Iterator[bytes]:
    """The bytes of ``fd`` in chunks of at most 1 MiB, stopping after ``cap`` bytes."""
    left = cap
    while left > 0:
        chunk = os.read(fd, min(left, READ_CHUNK))
        if not chunk:
            return
        left -= len(chunk)
        yield chunk


class Tree:
    """One watched root, opened: lexical paths below it are reached through its fd.

    ``with Tree(root) as t: t.lstat(path); fd = t.open_file(path, st)``. Paths are the
    absolute lexical paths the sensor knows (``root/a/b``); a path outside the root
    raises ``Outside``.
    """

    def __init__(self, root: str) -> None:
        self.root = os.path.abspath(root)
        self.fd, is_dir = open_root(self.root)
        self.anchor = self.root if is_dir else os.path.dirname(self.root)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> Tree:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def rel(self, path: str) -> str:
        path = os.path.abspath(path)
        if path == self.anchor:
            return ""
        prefix = self.anchor.rstrip("/") + "/"
        if not path.startswith(prefix) or (self.anchor != self.root and path != self.root):
            raise Outside(path, self.root)
        return path[len(prefix):]

    def _parent(self, path: str) -> tuple[int, str]:
        """(descriptor of the parent directory, last component): the caller closes it."""
        rel = self.rel(path)
        head, _, name = rel.rpartition("/")
        if not name:
            raise Outside(path, self.root)
        return open_beneath(self.fd, head, os.O_RDONLY | os.O_DIRECTORY), name

    def lstat(self, path: str) -> os.stat_result:
        """``lstat`` of ``path``, its directories resolved beneath the root (a link on the
        way: ``ELOOP``; a file on the way: ``ENOTDIR``)."""
        if self.rel(path) == "":
            return os.fstat(self.fd)
        dfd, name = self._parent(path)
        try:
            return os.stat(name, dir_fd=dfd, follow_symlinks=False)
        finally:
            os.close(dfd)

    def lstat_or_none(self, path: str) -> os.stat_result | None:
        """``lstat`` beneath the root; None when ``path`` is not there (gone, or a link or
        a file on the way)."""
        try:
            return self.lstat(path)
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as e:
            if e.errno == errno.ELOOP:
                return None
            raise

    def readlink(self, path: str) -> str:
        dfd, name = self._parent(path)
        try:
            return os.readlink(name, dir_fd=dfd)
        finally:
            os.close(dfd)

    def open_file(self, path: str, expect: os.stat_result | None = None, *,
                  ino: int | None = None) -> int:
        """A read descriptor of the regular file ``path``; with ``expect`` (its lstat), it
        must still be that (device, inode); with ``ino``, that inode. Raises
        ``NotRegular``, ``Replaced``."""
        if expect is not None and not stat.S_ISREG(expect.st_mode):
            raise NotRegular(path, kind_of(expect.st_mode))
        fd = open_beneath(self.fd, self.rel(path), os.O_RDONLY)
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise NotRegular(path, kind_of(st.st_mode))
            if expect is not None and (st.st_dev, st.st_ino) != (expect.st_dev,
                                                                 expect.st_ino):
                raise Replaced(path)
            if ino is not None and st.st_ino != ino:
                raise Replaced(path)
        except BaseException:
            os.close(fd)
            raise
        return fd

    def open_dir(self, path: str) -> int:
        return open_beneath(self.fd, self.rel(path), os.O_RDONLY | os.O_DIRECTORY)

    def read(self, path: str, cap: int, expect: os.stat_result | None = None, *,
             ino: int | None = None) -> tuple[bytes, os.stat_result]:
        """Up to ``cap`` bytes of the regular file ``path``, and the ``fstat`` of the
        descriptor they were read from."""
        fd = self.open_file(path, expect, ino=ino)
        try:
            data = read_capped(fd, cap)
            return data, os.fstat(fd)
        finally:
            os.close(fd)

    @contextmanager
    def listing(self, path: str) -> Iterator[Iterator[tuple[str, os.stat_result]]]:
        """(child path, lstat) of each entry of directory ``path``, listed through a
        descriptor opened beneath the root (``os.scandir(fd)``)."""
        dfd = self.open_dir(path)
        try:
            yield self._entries(dfd, path)
        finally:
            os.close(dfd)

    @staticmethod
    def _entries(dfd: int, path: str) -> Iterator[tuple[str, os.stat_result]]:
        base = path.rstrip("/") + "/"
        with os.scandir(dfd) as it:
            for entry in it:
                try:
                    st = entry.stat(follow_symlinks=False)
                except FileNotFoundError:
                    continue
                yield base + entry.name, st

    def xattr_fd(self, path: str, st: os.stat_result) -> int | None:
        """A descriptor for ``os.listxattr`` of the file or directory ``path`` (the one
        ``st`` describes; the caller closes it); None for anything else (never opened)."""
        if stat.S_ISREG(st.st_mode):
            return self.open_file(path, st)
        if not stat.S_ISDIR(st.st_mode):
            return None
        fd = self.open_dir(path) if self.rel(path) else os.dup(self.fd)
        now = os.fstat(fd)
        if (now.st_dev, now.st_ino) != (st.st_dev, st.st_ino):
            os.close(fd)
            raise Replaced(path)
        return fd


def list_beneath(root: str, path: str) -> list[tuple[str, os.stat_result]]:
    """The entries of directory ``path`` under ``root`` (bounded by the directory)."""
    with Tree(root) as tree, tree.listing(path) as entries:
        return list(entries)
