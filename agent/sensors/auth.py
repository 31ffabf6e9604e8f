"""Logins and privilege use: follow the auth log (or journald) and emit ``sisguard.auth``.

File mode (``mode: file``): every configured path that exists is followed like
``tail -F``: a rename (logrotate) is noticed by the inode changing; the old file is read
to its end (and kept open for ``rotate_grace`` in case the writer has not reopened yet),
then the new one from its start. A truncation (``copytruncate``) is noticed by the size
falling below the read offset. The offset, inode and a hash of the file's first bytes are
saved in ``state_dir/offsets.json`` after every batch, so a restart resumes exactly where
the last run stopped (looking for the rotated file by inode if the log was rotated while
the agent was down). A path never seen before is read from its end (``start_at``), a file
that appears later from its start.

Journald mode (no configured file exists and ``journalctl`` is there): ``journalctl -o
json --follow`` filtered to our programs, resuming after the last cursor saved.

Parsing is in ``agent.sensors.authlog``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from agent.sensors.authlog import PROGRAMS, SyslogRecord, auth_document, parse_syslog_line
from agent.sensors.base import Sensor, SensorContext
from common.logs import get_logger
from common.yamlconf import Duration

log = get_logger("sisguard.agent.auth")

HEAD_BYTES = 256   # the "fingerprint" of a file: a hash of (up to) its first 256 bytes
MAX_LINE = 64 * 1024


@dataclass(frozen=True)
class AuthConfig:
    paths: tuple[Path, ...] = (Path("/var/log/auth.log"), Path("/var/log/secure"))
    journald: bool = True            # use journalctl when none of the paths exists
    journald_socket: Path = Path("/run/systemd/journal/socket")  # ... and journald runs
    poll_interval: Duration = Duration(0.5)
    rotate_grace: Duration = Duration(5.0)
    start_at: str = "end"            # for a file never seen before: "end" or "beginning"
    extra_programs: tuple[str, ...] = ()   # more syslog tags to keep, as log_line events


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

    # -- opening -----------------------------------------------------------------------
    def _open_current(self) -> bool:
        try:
            f = open(self.path, "rb")  # noqa: SIM115 - kept open while following
        except FileNotFoundError:
            self._first = False  # a file that appears later is read from its start
            return False
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
                f = open(candidate, "rb")  # noqa: SIM115
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
    @staticmethod
    def _read(f: IO[bytes], partial: bytes) -> tuple[list[bytes], bytes, int]:
        """Complete lines from f's position on, the new partial tail, bytes consumed."""
        data = f.read()
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


def journal_record(entry: dict[str, Any]) -> tuple[SyslogRecord, str] | None:
    """A journald JSON entry as a syslog record and an RFC 3339 syslog line."""
    program = entry.get("SYSLOG_IDENTIFIER")
    message = entry.get("MESSAGE")
    if not isinstance(program, str) or message is None:
        return None
    if isinstance(message, list):  # journald sends non-UTF-8 messages as byte arrays
        message = bytes(int(b) & 0xFF for b in message).decode("utf-8", "replace")
    try:
        micros = int(entry.get("__REALTIME_TIMESTAMP", 0))
    except (TypeError, ValueError):
        micros = 0
    when = (dt.datetime.fromtimestamp(micros / 1e6, dt.UTC) if micros
            else dt.datetime.now(dt.UTC))
    pid_text = entry.get("SYSLOG_PID") or entry.get("_PID")
    pid = int(pid_text) if isinstance(pid_text, str) and pid_text.isdigit() else None
    host = str(entry.get("_HOSTNAME", "-"))
    record = SyslogRecord(when, host, program, pid, str(message))
    tag = f"{program}[{pid}]" if pid is not None else program
    return record, f"{when.isoformat()} {host} {tag}: {message}"


Spawn = Callable[[list[str]], "subprocess.Popen[bytes]"]


def _spawn(argv: list[str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)


class AuthSensor(Sensor):
    name = "auth"
    config: AuthConfig

    def __init__(self, config: AuthConfig, context: SensorContext, *,
                 spawn: Spawn = _spawn, which: Callable[[str], str | None] = shutil.which,
                 now: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC)) -> None:
        super().__init__(config, context)
        self._spawn = spawn
        self._which = which
        self._now = now
        self._extra = frozenset(config.extra_programs)
        self._state_path = context.state_dir / "offsets.json"
        self._followers: list[FileFollower] = []
        self._journal: subprocess.Popen[bytes] | None = None
        self._threads: list[threading.Thread] = []

    def _load_state(self) -> dict[str, Any]:
        try:
            data = json.loads(self._state_path.read_text())
            return data if isinstance(data, dict) else {}
        except (OSError, ValueError):
            return {}

    def _save_state(self) -> None:
        data = {str(f.path): f.state() for f in self._followers}
        tmp = self._state_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data))
        os.replace(tmp, self._state_path)

    def start(self) -> None:
        existing = [p for p in self.config.paths if p.exists()]
        journalctl = (self._which("journalctl") if self.config.journald
                      and self.config.journald_socket.exists() else None)
        if not existing and journalctl:
            self.context.health.mode = "journald"
            thread = threading.Thread(target=self._journal_loop, args=(journalctl,),
                                      name="auth-journal", daemon=True)
        else:
            if not existing:
                self.context.report_error("no auth log found; waiting for it",
                                          {"file.path": [str(p) for p in self.config.paths]})
            self.context.health.mode = "file"
            saved = self._load_state()
            self._followers = [
                FileFollower(p, saved.get(str(p)), start_at_end=self.config.start_at == "end",
                             grace=self.config.rotate_grace) for p in self.config.paths]
            for follower in self._followers:  # fix the start offsets before returning
                follower.prime()
            thread = threading.Thread(target=self._file_loop, name="auth-files", daemon=True)
        log.info("auth sensor", mode=self.context.health.mode,
                 paths=[str(p) for p in existing])
        self._threads.append(thread)
        thread.start()

    def stop(self) -> None:
        super().stop()
        if self._journal is not None and self._journal.poll() is None:
            self._journal.terminate()

    def join(self, timeout: float | None = None) -> None:
        for thread in self._threads:
            thread.join(timeout)
        if self._journal is not None:
            try:
                self._journal.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._journal.kill()

    def _handle_line(self, raw: bytes) -> None:
        try:
            line = raw.decode("utf-8", "replace")
            record = parse_syslog_line(line, self._now())
            if record is None:
                return
            doc = auth_document(record, line, extra_programs=self._extra)
            if doc is not None:
                self.emit(doc)
        except Exception as e:  # a daemon never dies on one bad line
            self.context.health.count_error(f"{type(e).__name__}: {e}")
            log.exception("auth line failed")

    def _file_loop(self) -> None:
        try:
            while True:
                for follower in self._followers:
                    try:
                        lines = follower.poll()
                    except PermissionError as e:
                        self.context.report_error(f"cannot read auth log: {e}",
                                                  {"file.path": str(follower.path)})
                        self._stop.wait(30)
                        continue
                    except OSError as e:
                        self.context.health.count_error(f"{follower.path}: {e}")
                        continue
                    for raw in lines:
                        self._handle_line(raw)
                    if lines:
                        self._save_state()
                if self._stop.wait(self.config.poll_interval):
                    break
            for follower in self._followers:  # what arrived while stopping
                for raw in follower.poll():
                    self._handle_line(raw)
            self._save_state()
        finally:
            for follower in self._followers:
                follower.close()

    def _journal_loop(self, journalctl: str) -> None:
        cursor_path = self.context.state_dir / "journal.cursor"
        matches = [f"SYSLOG_IDENTIFIER={p}" for p in sorted({*PROGRAMS, *self._extra})]
        while not self._stop.is_set():
            argv = [journalctl, "-o", "json", "--follow", "--no-pager"]
            try:
                argv.append(f"--after-cursor={cursor_path.read_text().strip()}")
            except OSError:
                argv += ["-n", "0"]
            try:
                self._journal = self._spawn(argv + matches)
            except OSError as e:
                self.context.report_error(f"cannot run journalctl: {e}", {})
                self._stop.wait(30)
                continue
            assert self._journal.stdout is not None
            for raw in self._journal.stdout:
                try:
                    entry = json.loads(raw)
                    converted = journal_record(entry)
                    if converted is None:
                        continue
                    record, line = converted
                    doc = auth_document(record, line, extra_programs=self._extra)
                    if doc is not None:
                        self.emit(doc)
                    cursor = entry.get("__CURSOR")
                    if isinstance(cursor, str):
                        cursor_path.write_text(cursor)
                except Exception as e:
                    self.context.health.count_error(f"{type(e).__name__}: {e}")
            code = self._journal.wait()
            if not self._stop.is_set():
                self.context.report_error(f"journalctl exited with {code}; restarting", {})
                self._stop.wait(5)
