"""Following a log file like ``tail -F``, across renames and truncations, resumable.

``FileFollower(path, saved_state, ...)``: ``poll()`` returns the complete lines written
since the last call; ``state()`` is what to save so that a new follower (after a restart)
continues exactly there. A rename (logrotate) is noticed by the inode changing: the old
file is read to its end and kept open ``grace`` seconds in case the writer has not
reopened yet, then the new file is read from its start. A truncation (``copytruncate``) is
noticed, before reading, by the size falling below the offset or the first bytes
changing. On resume, a file whose inode changed is looked for among its rotated siblings
(``auth.log.1``, ...) by inode and head hash, and finished first. A path that is a
symbolic link, a FIFO or a device is never opened (``problem`` says so).
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from agent.platform.linux.saferead import NotRegular, kind_of
from common.logs import get_logger

log = get_logger("sisguard.agent.logfollow")

HEAD_BYTES = 256   # the "fingerprint" of a file: a hash of (up to) its first 256 bytes
MAX_LINE = 64 * 1024


_OPEN = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY


def open_log(path: Path) -> IO[bytes]:
    """Open a log to follow: never through a symbolic link (whoever can write the log's
    directory could point it at /etc/shadow), never a FIFO or device (which would block
    or never end): ``NotRegular`` for those."""
    try:
        fd = os.open(path, _OPEN)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise NotRegular(str(path), "symlink") from e
        raise
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise NotRegular(str(path), kind_of(mode))
    except BaseException:
        os.close(fd)
        raise
    return os.fdopen(fd, "rb")


def _head(f: IO[bytes], size: int) -> tuple[int, str]:
    n = min(size, HEAD_BYTES)
    pos = f.tell()
    f.seek(0)
    data = f.read(n)
    f.seek(pos)
    return len(data), hashlib.sha256(data).hexdigest()


class FileFollower:
    """Follows one path across renames and truncations; yields complete lines."""

    def __init__(self, path: Path, saved: dict[str, Any] | None, *, start_at_end: bool,
                 grace: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.path = path
        self.grace = grace
        self.clock = clock
        self.file: IO[bytes] | None = None
        self.offset = 0
        self.buffer = b""
        self.old: list[tuple[IO[bytes], bytes, float]] = []  # rotated: file, partial, until
        self._saved = saved
        self._start_at_end = start_at_end and saved is None
        self._first = True
        self._head_bytes = b""
        self.problem = ""  # why the path is not followed now (a symlink, a FIFO), or ""

    # -- opening -----------------------------------------------------------------------
    def _open_current(self) -> bool:
        try:
            f = open_log(self.path)
        except FileNotFoundError:
            self._first = False  # a file that appears later is read from its start
            return False
        except NotRegular as e:  # as if absent (a rotated file is still read), and said
            if self.problem != str(e):
                log.warning("log not followed", path=str(self.path), error=str(e))
            self.problem = str(e)
            self._first = False
            return False
        self.problem = ""
        st = os.fstat(f.fileno())
        self.file, self.offset, self.buffer, self._head_bytes = f, 0, b"", b""
        if self._first:
            self._first = False
            saved = self._saved
            if saved is not None:
                self._resume(f, st, saved)
            elif self._start_at_end:
                self.offset = st.st_size
        f.seek(self.offset)
        return True

    def _resume(self, f: IO[bytes], st: os.stat_result, saved: dict[str, Any]) -> None:
        offset = int(saved.get("offset", 0))
        same = (st.st_ino == saved.get("inode") and st.st_dev == saved.get("dev"))
        if same and st.st_size >= offset and self._head_matches(f, st.st_size, saved):
            self.offset = offset
            return
        if not same:  # rotated while we were down: finish the old file first
            rotated = self._find_rotated(saved)
            if rotated is not None:
                rotated.seek(offset)
                self.old.append((rotated, b"", self.clock() + self.grace))
        self.offset = 0

    @staticmethod
    def _head_matches(f: IO[bytes], size: int, saved: dict[str, Any]) -> bool:
        n = int(saved.get("head_len", 0))
        if size < n:
            return False
        pos = f.tell()
        f.seek(0)
        data = f.read(n)
        f.seek(pos)
        return hashlib.sha256(data).hexdigest() == saved.get("head")

    def _find_rotated(self, saved: dict[str, Any]) -> IO[bytes] | None:
        directory = self.path.parent
        try:
            names = [n for n in os.listdir(directory) if n.startswith(self.path.name)]
        except OSError:
            return None
        for name in sorted(names):
            candidate = directory / name
            try:
                st = os.stat(candidate)
            except OSError:
                continue
            if st.st_ino == saved.get("inode") and st.st_dev == saved.get("dev"):
                try:
                    f = open_log(candidate)
                except OSError:
                    continue
                if st.st_size >= int(saved.get("offset", 0)) and self._head_matches(
                        f, st.st_size, saved):
                    return f
                f.close()
        return None

    def prime(self) -> None:
        """Open the file now (if it exists), so "start at end" means the end as of now."""
        if self.file is None:
            self._open_current()

    # -- reading -----------------------------------------------------------------------
    def _read_size(self) -> int:
        """Bytes one read may take: to the end here; a subclass may bound it."""
        return -1

    def _read(self, f: IO[bytes], partial: bytes) -> tuple[list[bytes], bytes, int]:
        """Complete lines from f's position on, the new partial tail, bytes consumed."""
        data = f.read(self._read_size())
        if not data:
            return [], partial, 0
        data = partial + data
        lines = data.split(b"\n")
        tail = lines.pop()
        if len(tail) > MAX_LINE:  # a runaway line: cut it rather than grow forever
            lines.append(tail)
            tail = b""
        return [line + b"\n" for line in lines], tail, len(data) - len(partial)

    def poll(self) -> list[bytes]:
        lines: list[bytes] = []
        now = self.clock()
        opened = self.file is not None or self._open_current()  # may queue a rotated file
        keep: list[tuple[IO[bytes], bytes, float]] = []
        for f, partial, until in self.old:
            got, partial, n = self._read(f, partial)
            lines.extend(got)
            if n:
                until = now + self.grace
            if now < until:
                keep.append((f, partial, until))
            else:
                if partial:
                    lines.append(partial + b"\n")
                f.close()
        self.old = keep
        if not opened:
            return lines
        assert self.file is not None
        self._check_truncated()
        lines.extend(self.poll_current())
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            st = None
        fst = os.fstat(self.file.fileno())
        if st is not None and (st.st_ino, st.st_dev) != (fst.st_ino, fst.st_dev):
            # renamed away: keep reading the old file a while, start the new one
            self.old.append((self.file, self.buffer, now + self.grace))
            self.file = None
            if self._open_current():
                lines.extend(self.poll_current())
        return lines

    def _check_truncated(self) -> None:
        """Before reading: a file shorter than our offset, or with other first bytes, was
        truncated (and maybe rewritten past our offset): start it over."""
        assert self.file is not None
        size = os.fstat(self.file.fileno()).st_size
        if size < self.offset or not self._same_head(self.file, size):
            log.info("log truncated", path=str(self.path), size=size, offset=self.offset)
            self.file.seek(0)
            self.offset, self.buffer, self._head_bytes = 0, b"", b""

    def _same_head(self, f: IO[bytes], size: int) -> bool:
        """False if the file's first bytes changed (truncated and rewritten past our offset)."""
        want = min(size, HEAD_BYTES, self.offset)
        data = self._read_at(f, 0, want)
        n = min(len(data), len(self._head_bytes))
        if data[:n] != self._head_bytes[:n]:
            return False
        if len(data) > len(self._head_bytes):
            self._head_bytes = data
        return True

    @staticmethod
    def _read_at(f: IO[bytes], offset: int, n: int) -> bytes:
        return os.pread(f.fileno(), n, offset)

    def poll_current(self) -> list[bytes]:
        assert self.file is not None
        got, self.buffer, _ = self._read(self.file, self.buffer)
        self.offset = self.file.tell() - len(self.buffer)
        if len(self._head_bytes) < min(self.offset, HEAD_BYTES):  # what we have read
            self._head_bytes = self._read_at(self.file, 0, min(self.offset, HEAD_BYTES))
        return got

    def state(self) -> dict[str, Any] | None:
        if self.file is None:
            return self._saved
        fst = os.fstat(self.file.fileno())
        head_len, head = _head(self.file, fst.st_size)
        return {"inode": fst.st_ino, "dev": fst.st_dev, "offset": self.offset,
                "head_len": head_len, "head": head}

    def close(self) -> None:
        for f, _, _ in self.old:
            f.close()
        self.old = []
        if self.file is not None:
            self.file.close()
            self.file = None
