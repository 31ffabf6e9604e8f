"""Open a process's running image for hashing without ever blocking on its file system.

``/proc/PID/exe`` is the file the kernel started, whatever has happened to its path since
(renamed, replaced by a FIFO or a symlink, deleted). Opening it for reading still runs the
file system's ``open``: on FUSE that is a request to a daemon that any user who can mount
one (``fusermount``, or a user namespace) controls and can leave unanswered for good, and
on NFS or CIFS a request to a server that may be down. So the image is first opened with
``O_PATH`` (no file system call), and ``statx(AT_STATX_DONT_SYNC)`` on that descriptor
(answered from the inode cache, no request either) gives its device: a device with a major
number is a block device's file system; an anonymous one (major 0: tmpfs, overlay, btrfs,
FUSE, NFS...) is looked up in the process's ``/proc/PID/mountinfo``. Only images on the
allowed file-system types are then reopened for reading, through the ``O_PATH``
descriptor (the same file even if the pid is reused meanwhile), with ``O_NONBLOCK``.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import struct

# local file systems, served by the kernel from a block device or memory
LOCAL_FILE_SYSTEMS = (
    "ext2", "ext3", "ext4", "xfs", "btrfs", "bcachefs", "f2fs", "jfs", "reiserfs", "nilfs2",
    "zfs", "tmpfs", "ramfs", "rootfs", "devtmpfs", "overlay", "squashfs", "erofs",
    "iso9660", "udf", "vfat", "exfat", "ntfs3", "hfsplus")

AT_EMPTY_PATH = 0x1000
AT_STATX_DONT_SYNC = 0x4000
STATX_TYPE = 0x1
_STATX_SIZE = 256                 # struct statx, with its spare room
_DEV = struct.Struct("=II")       # stx_dev_major, stx_dev_minor at offset 136
MOUNTINFO_MAX = 1 << 20           # bytes of /proc/PID/mountinfo read, at most

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_statx = getattr(_libc, "statx", None)   # glibc >= 2.28
if _statx is not None:
    _statx.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_uint,
                       ctypes.c_void_p]
    _statx.restype = ctypes.c_int


class NotHashable(Exception):
    """The image lies where reading could block; ``str(e)`` says which file system."""


def device_of(fd: int) -> tuple[int, int] | None:
    """(major, minor) of the file system holding ``fd``'s file, from the inode cache;
    None when this libc has no statx."""
    if _statx is None:
        return None
    buf = ctypes.create_string_buffer(_STATX_SIZE)
    if _statx(fd, b"", AT_EMPTY_PATH | AT_STATX_DONT_SYNC, STATX_TYPE, buf) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"statx: {os.strerror(err)}")
    major, minor = _DEV.unpack_from(buf.raw, 136)
    return int(major), int(minor)


def fs_type(mountinfo: bytes, major: int, minor: int) -> str | None:
    """The type of the file system whose device is major:minor in a mountinfo text."""
    dev = f"{major}:{minor}".encode()
    for line in mountinfo.split(b"\n"):
        fields = line.split(b" ")
        if len(fields) > 3 and fields[2] == dev and b"-" in fields[6:]:
            sep = fields.index(b"-", 6)
            if sep + 1 < len(fields):
                return fields[sep + 1].decode("ascii", "backslashreplace")
    return None


def _read_mountinfo(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read(MOUNTINFO_MAX)


def open_image(proc_root: str, pid: int, allowed: frozenset[str]) -> int:
    """A read-only, non-blocking descriptor of ``pid``'s running image. Raises OSError
    (gone, denied) or NotHashable (a file system whose reads may block)."""
    flags = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
    o_path = getattr(os, "O_PATH", 0)
    exe = f"{proc_root}/{pid}/exe"
    if not o_path:                      # not Linux: nothing better to do
        return os.open(exe, flags)
    pfd = os.open(exe, o_path | getattr(os, "O_CLOEXEC", 0))
    try:
        dev = device_of(pfd)
        if dev is not None and dev[0] == 0:
            try:
                kind = fs_type(_read_mountinfo(f"{proc_root}/{pid}/mountinfo"), *dev)
            except OSError:
                kind = None
            if kind not in allowed:
                raise NotHashable(f"executable on a {kind or 'unknown'} file system "
                                  f"(device {dev[0]}:{dev[1]}): not read, reads there can "
                                  "block (a user's or a remote file system); see "
                                  "hash_file_systems")
        return os.open(f"/proc/self/fd/{pfd}", flags)
    finally:
        os.close(pfd)
