"""Reading a process's facts from ``/proc`` as fast as possible (it may be gone soon).

Text that goes into documents as it is (``args``, ``comm``) is made valid here with
``common.text.escape_bytes``; ``exe`` and ``cwd`` stay OS strings (``os.fsdecode``) so
that they can still be opened, and the sensor escapes them where it builds a document.

``ProcFS.snapshot(pid)`` reads ``exe``, ``cmdline``, ``stat``, ``status`` and ``cwd`` in
that order (the most useful first) and keeps whatever it got before the process vanished.
The root is a parameter so tests can point it at a fake tree.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

from common.text import escape_bytes


@dataclass
class Snapshot:
    pid: int
    exe: str | None = None
    deleted: bool = False          # the executable was deleted or replaced
    args: list[str] | None = None
    comm: str | None = None
    ppid: int | None = None
    start_ticks: int | None = None  # clock ticks after boot (stat field 22)
    uid: int | None = None
    euid: int | None = None
    cwd: str | None = None

    @property
    def complete(self) -> bool:
        return self.exe is not None and self.ppid is not None


class ProcFS:
    def __init__(self, root: str = "/proc") -> None:
        self.root = root
        self.clk_tck = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100

    def pids(self) -> list[int]:
        try:
            return [int(n) for n in os.listdir(self.root) if n.isdigit()]
        except OSError:
            return []

    def snapshot(self, pid: int) -> Snapshot:
        snap = Snapshot(pid)
        base = f"{self.root}/{pid}"
        try:
            exe = os.readlink(f"{base}/exe")
            if exe.endswith(" (deleted)"):
                exe, snap.deleted = exe[: -len(" (deleted)")], True
            snap.exe = exe
        except OSError:
            pass
        try:
            with open(f"{base}/cmdline", "rb") as f:
                raw = f.read()
            if raw:
                snap.args = [escape_bytes(a) for a in raw.rstrip(b"\0").split(b"\0")]
        except OSError:
            pass
        try:
            with open(f"{base}/stat", "rb") as f:
                stat = f.read()
            lp, rp = stat.find(b"("), stat.rfind(b")")
            snap.comm = escape_bytes(stat[lp + 1:rp])
            fields = stat[rp + 2:].split()
            snap.ppid = int(fields[1])
            snap.start_ticks = int(fields[19])
        except (OSError, ValueError, IndexError):
            pass
        try:
            with open(f"{base}/status", "rb") as f:
                for line in f:
                    if line.startswith(b"Uid:"):
                        parts = line.split()
                        snap.uid, snap.euid = int(parts[1]), int(parts[2])
                        break
        except (OSError, ValueError, IndexError):
            pass
        with contextlib.suppress(OSError):
            snap.cwd = os.readlink(f"{base}/cwd")
        return snap

    def boot_id(self) -> str:
        try:
            return Path(f"{self.root}/sys/kernel/random/boot_id").read_text().strip()
        except OSError:
            return "unknown-boot"

    def boot_time(self) -> float:
        """Wall-clock time of boot: from CLOCK_BOOTTIME (to the microsecond), else btime."""
        if self.root == "/proc" and hasattr(time, "CLOCK_BOOTTIME"):
            return time.time() - time.clock_gettime(time.CLOCK_BOOTTIME)
        try:
            for line in Path(f"{self.root}/stat").read_text().splitlines():
                if line.startswith("btime "):
                    return float(line.split()[1])
        except (OSError, ValueError):
            pass
        return 0.0


class HashCache:
    """SHA-256 of executables, cached by (path, device, inode, mtime, size); LRU-bounded."""

    def __init__(self, *, max_entries: int = 4096, max_bytes: int = 128 * 1024 * 1024) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._cache: OrderedDict[tuple[str, int, int, int, int], str | None] = OrderedDict()

    def sha256(self, path: str, *, fallback: str | None = None) -> str | None:
        """Hash ``path``; if it is gone, ``fallback`` (``/proc/PID/exe``) is tried."""
        for candidate in (path, fallback):
            if candidate is None:
                continue
            try:
                st = os.stat(candidate)
            except OSError:
                continue
            key = (path, st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size)
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
            digest: str | None = None
            if st.st_size <= self.max_bytes:
                try:
                    with open(candidate, "rb", buffering=0) as f:
                        digest = hashlib.file_digest(f, "sha256").hexdigest()
                except OSError:
                    continue
            self._cache[key] = digest
            if len(self._cache) > self.max_entries:
                self._cache.popitem(last=False)
            return digest
        return None
