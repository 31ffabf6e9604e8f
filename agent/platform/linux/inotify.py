"""inotify(7) through libc: one descriptor, its watches, and its events decoded.

The watch policy (which directories, within what budget, renames paired by cookie) is
FIM's, in ``agent.sensors.fim.watcher``; this module only speaks to the kernel. It
satisfies ``agent.platform.FileEvents``.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import struct

from agent.platform import WatchEvent

IN_MODIFY, IN_ATTRIB, IN_CLOSE_WRITE = 0x2, 0x4, 0x8
IN_MOVED_FROM, IN_MOVED_TO, IN_CREATE, IN_DELETE = 0x40, 0x80, 0x100, 0x200
IN_DELETE_SELF, IN_MOVE_SELF, IN_Q_OVERFLOW, IN_IGNORED = 0x400, 0x800, 0x4000, 0x8000
IN_ONLYDIR, IN_DONT_FOLLOW, IN_EXCL_UNLINK, IN_ISDIR = (0x1000000, 0x2000000, 0x4000000,
                                                        0x40000000)
_HEADER = struct.Struct("iIII")
READ_SIZE = 1 << 16   # bytes per read(2): the kernel never splits an event across reads

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_libc.inotify_init1.argtypes = [ctypes.c_int]
_libc.inotify_add_watch.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
_libc.inotify_rm_watch.argtypes = [ctypes.c_int, ctypes.c_int]


def decode(data: bytes) -> list[WatchEvent]:
    """The events in one read's bytes (a truncated tail is ignored); names lose their
    NUL padding."""
    events: list[WatchEvent] = []
    offset = 0
    while offset + _HEADER.size <= len(data):
        wd, mask, cookie, length = _HEADER.unpack_from(data, offset)
        raw = data[offset + _HEADER.size: offset + _HEADER.size + length]
        offset += _HEADER.size + length
        events.append(WatchEvent(wd, mask, cookie, raw.rstrip(b"\0")))
    return events


class Inotify:
    """One non-blocking, close-on-exec inotify descriptor."""

    def __init__(self) -> None:
        self.fd = _libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        if self.fd < 0:
            e = ctypes.get_errno()
            raise OSError(e, f"inotify_init1: {os.strerror(e)}")

    def fileno(self) -> int:
        return int(self.fd)

    def add_watch(self, path: bytes, mask: int) -> tuple[int, int]:
        wd = int(_libc.inotify_add_watch(self.fd, path, mask))
        return wd, ctypes.get_errno() if wd < 0 else 0

    def rm_watch(self, wd: int) -> None:
        _libc.inotify_rm_watch(self.fd, wd)

    def read(self) -> list[WatchEvent]:
        try:
            data = os.read(self.fd, READ_SIZE)
        except BlockingIOError:
            return []
        return decode(data)

    def close(self) -> None:
        os.close(self.fd)
