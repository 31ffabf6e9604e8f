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

import contextlib
import datetime as dt
import json
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.platform import LogFollower
from agent.platform.linux.logfollow import FileFollower
from agent.sensors.authlog import PROGRAMS, SyslogRecord, auth_document, parse_syslog_line
from agent.sensors.base import Sensor, SensorContext
from agent.timer import Job
from common.logs import get_logger
from common.text import escape_bytes, os_text
from common.yamlconf import Duration

log = get_logger("sisguard.agent.auth")


@dataclass(frozen=True)
class AuthConfig:
    paths: tuple[Path, ...] = (Path("/var/log/auth.log"), Path("/var/log/secure"))
    journald: bool = True            # use journalctl when none of the paths exists
    journald_socket: Path = Path("/run/systemd/journal/socket")  # ... and journald runs
    poll_interval: Duration = Duration(1.0)
    rotate_grace: Duration = Duration(5.0)
    start_at: str = "end"            # for a file never seen before: "end" or "beginning"
    extra_programs: tuple[str, ...] = ()   # more syslog tags to keep, as log_line events


def journal_record(entry: dict[str, Any]) -> tuple[SyslogRecord, str] | None:
    """A journald JSON entry as a syslog record and an RFC 3339 syslog line."""
    program = entry.get("SYSLOG_IDENTIFIER")
    message = entry.get("MESSAGE")
    if not isinstance(program, str) or message is None:
        return None
    if isinstance(message, list):  # journald sends non-UTF-8 messages as byte arrays
        message = escape_bytes(bytes(int(b) & 0xFF for b in message[:65536]))
    elif isinstance(message, str):
        message = os_text(message)   # a \udcxx escape in the JSON is a lone surrogate
    try:
        micros = int(entry.get("__REALTIME_TIMESTAMP", 0))
    except (TypeError, ValueError):
        micros = 0
    when = (dt.datetime.fromtimestamp(micros / 1e6, dt.timezone.utc) if micros
            else dt.datetime.now(dt.timezone.utc))
    pid_text = entry.get("SYSLOG_PID") or entry.get("_PID")
    pid = int(pid_text) if isinstance(pid_text, str) and pid_text.isdigit() else None
    host = os_text(str(entry.get("_HOSTNAME", "-")))
    program = os_text(program)
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
                 now: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.timezone.utc)) -> None:
        super().__init__(config, context)
        self._spawn = spawn
        self._which = which
        self._now = now
        self._extra = frozenset(config.extra_programs)
        self._state_path = context.state_dir / "offsets.json"
        self._followers: list[LogFollower] = []
        self._journal: subprocess.Popen[bytes] | None = None
        self._threads: list[threading.Thread] = []
        self._job: Job | None = None
        self._blocked: dict[str, float] = {}   # path -> monotonic time to try it again

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
            # the files are polled on the agent's timer thread (agent/timer.py)
            self._job = self.context.timer.every(float(self.config.poll_interval),
                                                 self._poll_files, name="auth-files")
            thread = None
        log.info("auth sensor", mode=self.context.health.mode,
                 paths=[str(p) for p in existing])
        if thread is not None:
            self._threads.append(thread)
            thread.start()

    def stop(self) -> None:
        super().stop()
        if self._job is not None:
            self._job.cancel(timeout=0)
        if self._journal is not None and self._journal.poll() is None:
            self._journal.terminate()

    def join(self, timeout: float | None = None) -> None:
        job, self._job = self._job, None
        if job is not None and job.cancel(timeout):
            self._finish_files()
        for thread in self._threads:
            thread.join(timeout)
        if self._journal is not None:
            try:
                self._journal.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._journal.kill()

    def _handle_line(self, raw: bytes) -> None:
        try:
            line = escape_bytes(raw)   # every byte kept: invalid ones as \xHH
            record = parse_syslog_line(line, self._now())
            if record is None:
                return
            doc = auth_document(record, line, extra_programs=self._extra)
            if doc is not None:
                self.emit(doc)
        except Exception as e:  # a daemon never dies on one bad line: reported, skipped
            self.context.report_error(f"cannot parse an auth log line: {type(e).__name__}: "
                                      f"{e}", {"event.original": escape_bytes(raw[:500])})
            log.exception("auth line failed")

    def _poll_files(self) -> None:
        """One round over the files (a job of the agent's timer)."""
        now = time.monotonic()
        for follower in self._followers:
            if self._blocked.get(str(follower.path), 0.0) > now:
                continue
            try:
                lines = follower.poll()
            except PermissionError as e:
                self.context.report_error(f"cannot read auth log: {e}",
                                          {"file.path": str(follower.path)})
                self._blocked[str(follower.path)] = now + 30   # said again in 30 s
                continue
            except OSError as e:
                self.context.health.count_error(f"{follower.path}: {e}")
                continue
            for raw in lines:
                self._handle_line(raw)
            if lines:
                self._save_state()

    def _finish_files(self) -> None:
        """What arrived while stopping, the offsets saved, the files closed."""
        try:
            for follower in self._followers:
                with contextlib.suppress(OSError):
                    for raw in follower.poll():
                        self._handle_line(raw)
            self._save_state()
        except OSError as e:
            self.context.report_error(f"cannot save auth offsets: {e}", {})
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
