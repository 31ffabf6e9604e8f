"""Room kept aside on the spool's file system, for the day that file system is full.

When the disk is full, SQLite cannot even delete: a delete writes pages to the WAL
first. An agent whose acks fail can never drain its spool, and stalls for good (the
fault matrix found it: tests/faults/test_spool_full.py). So the spool keeps a file of
``size`` bytes beside it; when SQLite says the disk is full, the spool releases it,
deletes what it must (acked events, or its oldest ones, counted) and goes on. The file
is made again once the file system has room for it twice over.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

from common.logs import get_logger

log = get_logger("sisguard.agent.spool")


def disk_full(e: sqlite3.Error) -> bool:
    """SQLITE_FULL (by its code where Python has it, 3.11+, else by SQLite's message)."""
    code = getattr(e, "sqlite_errorcode", None)
    if code is not None:
        return int(code) & 0xFF == 13
    return "database or disk is full" in str(e)


class DiskReserve:
    def __init__(self, path: Path, size: int) -> None:
        self.path = path
        self.size = size

    def ensure(self) -> bool:
        """Make the reserve if it is missing and the file system has room (twice its size)."""
        if self.size <= 0:
            return False
        try:
            if self.path.exists():
                return True
            st = os.statvfs(self.path.parent)
            if st.f_bavail * st.f_frsize < 2 * self.size:
                return False
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
            try:
                os.write(fd, b"\0" * self.size)   # real blocks: a sparse file frees nothing
                os.fsync(fd)
            finally:
                os.close(fd)
            return True
        except OSError as e:
            log.warning("cannot keep the spool's disk reserve", path=str(self.path),
                        error=str(e))
            self.release()
            return False

    def release(self) -> bool:
        """Free the reserve; True if there was one to free."""
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            return False
        except OSError as e:
            log.warning("cannot free the spool's disk reserve", path=str(self.path),
                        error=str(e))
            return False
        log.warning("spool file system full: disk reserve released", path=str(self.path),
                    bytes=self.size)
        return True
