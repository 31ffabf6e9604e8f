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
import ipaddress
import os
import stat
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from agent.platform.linux.exe_open import LOCAL_FILE_SYSTEMS, NotHashable, open_image
from agent.platform.linux.sock_diag import Dump, Socket
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

    def start_ticks(self, pid: int) -> int | None:
        """Field 22 of ``/proc/PID/stat`` alone (cheaper than a snapshot); None if gone."""
        try:
            with open(f"{self.root}/{pid}/stat", "rb") as f:
                stat_line = f.read(4096)
            return int(stat_line[stat_line.rfind(b")") + 2:].split()[19])
        except (OSError, ValueError, IndexError):
            return None

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


@dataclass(frozen=True)
class ExeHash:
    """The SHA-256 of a process's running image, or why there is none (``error``)."""

    sha256: str | None = None
    error: str | None = None


@dataclass
class OpenExe:
    """``/proc/PID/exe`` opened (by the reader thread) but not hashed yet: the descriptor
    keeps the image readable after the process is gone. ``HashCache.finish`` closes it."""

    fd: int
    key: tuple[int, int, int, int]
    size: int
    closed: bool = False


class HashCache:
    """SHA-256 of running images, read through ``/proc/PID/exe``, never by path.

    The kernel resolves ``/proc/PID/exe`` to the file the process was started from, even
    if its path was since renamed, replaced (by a FIFO, a symlink to another binary) or
    deleted, so the hash is the running image's and a path trick cannot block or fool it.
    ``exe_open.open_image`` opens it (``O_NONBLOCK``, and only on ``file_systems``: never
    on FUSE or NFS, whose reads can block); only a regular file within ``max_bytes`` is
    read, streamed. Results are cached by the descriptor's (device, inode, mtime, size),
    LRU-bounded; the cache is shared by the reader and worker threads (locked).
    """

    CHUNK = 1 << 20

    def __init__(self, *, max_entries: int = 4096, max_bytes: int = 128 * 1024 * 1024,
                 root: str = "/proc",
                 file_systems: Iterable[str] = LOCAL_FILE_SYSTEMS) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.root = root
        self.file_systems = frozenset(file_systems)   # images elsewhere are not read
        self._cache: OrderedDict[tuple[int, int, int, int], ExeHash] = OrderedDict()
        self._lock = threading.Lock()

    def begin(self, pid: int) -> ExeHash | OpenExe:
        """Open the image of ``pid``: the cached hash if the file is known, else the open
        descriptor to ``finish`` later (or the reason there can be no hash)."""
        try:
            fd = open_image(self.root, pid, self.file_systems)
        except NotHashable as e:
            return ExeHash(error=str(e))
        except FileNotFoundError:
            return ExeHash(error="process gone before its executable could be opened")
        except PermissionError as e:
            return ExeHash(error=f"executable not readable: {e.strerror}")
        except OSError as e:
            return ExeHash(error=f"cannot open /proc/{pid}/exe: {e.strerror or e}")
        try:
            st = os.fstat(fd)
        except OSError as e:
            os.close(fd)
            return ExeHash(error=f"fstat /proc/{pid}/exe: {e.strerror or e}")
        if not stat.S_ISREG(st.st_mode):
            os.close(fd)
            return ExeHash(error="executable is not a regular file")
        key = (st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size)
        with self._lock:
            known = self._cache.get(key)
            if known is not None:
                self._cache.move_to_end(key)
        if known is not None:
            os.close(fd)
            return known
        return OpenExe(fd, key, st.st_size)

    def finish(self, opened: OpenExe) -> ExeHash:
        """Hash an image opened by ``begin`` (streamed, within the cap) and close it."""
        try:
            result = self._digest(opened)
        finally:
            self.close(opened)
        if result.sha256 is not None or opened.size > self.max_bytes:  # not a passing error
            with self._lock:
                self._cache[opened.key] = result
                self._cache.move_to_end(opened.key)
                while len(self._cache) > self.max_entries:
                    self._cache.popitem(last=False)
        return result

    def close(self, opened: OpenExe) -> None:
        """Close an image opened by ``begin`` (once; again is a no-op)."""
        if not opened.closed:
            opened.closed = True
            os.close(opened.fd)

    def sha256(self, pid: int) -> ExeHash:
        """Open and hash at once (the poll mode, the sweep)."""
        got = self.begin(pid)
        return self.finish(got) if isinstance(got, OpenExe) else got

    def _digest(self, opened: OpenExe) -> ExeHash:
        if opened.size > self.max_bytes:
            return ExeHash(error=f"executable over hash_max_bytes ({opened.size} > "
                                 f"{self.max_bytes} bytes)")
        digest = hashlib.sha256()
        left = self.max_bytes + 1    # the file may grow after the fstat: still bounded
        offset = 0
        while left > 0:
            try:
                chunk = os.pread(opened.fd, min(self.CHUNK, left), offset)
            except OSError as e:
                return ExeHash(error=f"reading the executable: {e.strerror or e}")
            if not chunk:
                break
            digest.update(chunk)
            offset += len(chunk)
            left -= len(chunk)
        if left <= 0:
            return ExeHash(error=f"executable grew over hash_max_bytes ({self.max_bytes} "
                                 "bytes) while it was read")
        return ExeHash(sha256=digest.hexdigest())


# -- the socket tables (the network sensor's fallback when sock_diag is refused) ----------
TABLES = (("tcp", "ipv4", "tcp"), ("tcp", "ipv6", "tcp6"),
          ("udp", "ipv4", "udp"), ("udp", "ipv6", "udp6"))


def _addr(text: str) -> tuple[str, int]:
    """``0100007F:1F90`` -> ("127.0.0.1", 8080); IPv6 is four little-endian words."""
    host, port = text.split(":")
    raw = bytes.fromhex(host)
    raw = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
    ip = ipaddress.ip_address(raw)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped), int(port, 16)
    return str(ip), int(port, 16)


def parse_table(text: str, transport: str, family: str, *,
                limit: int = 1 << 62) -> list[Socket]:
    """Parse one ``/proc/net/{tcp,udp}[6]`` table (at most ``limit`` sockets)."""
    sockets: list[Socket] = []
    for line in text.splitlines()[1:]:
        if len(sockets) >= limit:
            break
        parts = line.split()
        if len(parts) < 10:
            continue
        try:
            lip, lport = _addr(parts[1])
            rip, rport = _addr(parts[2])
            sockets.append(Socket(transport, family, lip, lport, rip, rport, int(parts[3], 16),
                                  int(parts[7]), int(parts[9])))
        except ValueError:
            continue
    return sockets


def read_sockets(root: str = "/proc", *, udp: bool = True,
                 max_sockets: int = 20_000) -> Dump:
    """The fallback reader: ``/proc/net`` tables, each read within 160 bytes a socket."""
    dump = Dump([])
    for transport, family, table in TABLES:
        if transport == "udp" and not udp:
            continue
        left = max_sockets - len(dump.sockets)
        if left <= 0:
            dump.truncated = True
            break
        try:
            with open(f"{root}/net/{table}", "rb") as f:
                raw = f.read(160 * (left + 1))
                if f.read(1):
                    dump.truncated = True
        except OSError:
            continue
        text = raw.decode("ascii", "replace")
        if dump.truncated:
            text = text[:text.rfind("\n")]   # the last line may be cut
        got = parse_table(text, transport, family, limit=left)
        dump.truncated = dump.truncated or len(got) >= left
        dump.sockets.extend(got)
    return dump
