"""``status.json``: what the running agent shows ``sisguard-agent status``.

The agent rewrites ``STATE_DIR/status.json`` every few seconds (``STATUS_EVERY``, or the
heartbeat interval when shorter) from a thread of its own, whether it is connected or
not: a file, not a socket, so ``status`` needs no listener in the agent and nothing
else can talk to it. The file is written beside as a private temporary file (0600,
``mkstemp`` in the state directory, which is root's and 0700) and renamed into place:
a reader sees the old or the new file, never half of one. ``status`` says how old the
file is; one older than three periods means the agent is not running (or is stuck).

Its fields: ``time`` (written, ISO-8601 UTC) and ``time_unix``, ``pid``, ``agent_id``,
``collector`` (the address of the collector it is connected to, or null),
``last_ack`` (ISO-8601 or null), ``last_error`` (the shipper's), ``connects``,
``events_acked``, ``events_rejected``, ``spool`` (``events``, ``bytes``, ``dropped``,
``last_seq``, ``oldest_unacked_age_seconds``), ``interval_seconds`` and ``sensors``
(each: ``name``, ``mode``, ``events``, ``errors``, ``last_error``, ``details``).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from agent.timer import Job, Timer
from common.logs import get_logger

log = get_logger("sisguard.agent.status")

STATUS_FILE = "status.json"
STATUS_EVERY = 5.0          # seconds
MAX_STATUS_BYTES = 256 * 1024   # a reader reads no more than this


def iso(t: float) -> str:
    return dt.datetime.fromtimestamp(t, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def write_status(state_dir: Path, data: dict[str, Any]) -> None:
    """Atomically replace ``STATE_DIR/status.json`` (0600)."""
    body = json.dumps(data, indent=2, ensure_ascii=True).encode() + b"\n"
    fd, tmp = tempfile.mkstemp(dir=str(state_dir), prefix=".status.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(body)
        os.replace(tmp, state_dir / STATUS_FILE)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def read_status(state_dir: Path, *, now: float | None = None) -> dict[str, Any] | None:
    """The running agent's status with its ``age_seconds``; None when there is none."""
    path = state_dir / STATUS_FILE
    try:
        fd = os.open(str(path), os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except FileNotFoundError:
        return None
    with os.fdopen(fd, "rb") as f:
        raw = f.read(MAX_STATUS_BYTES + 1)
    if len(raw) > MAX_STATUS_BYTES:
        return {"error": f"{path}: over {MAX_STATUS_BYTES} bytes: not read"}
    try:
        data = json.loads(raw)
    except ValueError as e:
        return {"error": f"{path}: not JSON: {e}"}
    if not isinstance(data, dict):
        return {"error": f"{path}: not a JSON object"}
    written = data.get("time_unix")
    if isinstance(written, (int, float)):
        age = max(0.0, (now if now is not None else time.time()) - float(written))
        data["age_seconds"] = round(age, 1)
        period = data.get("period_seconds")
        period = float(period) if isinstance(period, (int, float)) else STATUS_EVERY
        data["stale"] = age > 3 * period
    return data


class StatusWriter(threading.Thread):
    """Writes ``report()`` to the state directory every ``period`` seconds until stopped:
    as a job of ``timer`` (the agent's one timer thread) when one is given, else in a
    thread of its own."""

    def __init__(self, state_dir: Path, report: Callable[[], dict[str, Any]], *,
                 period: float, timer: Timer | None = None) -> None:
        super().__init__(name="status", daemon=True)
        self.state_dir = state_dir
        self.report = report
        self.period = period
        self._halt = threading.Event()
        self._timer = timer
        self._job: Job | None = None
        self.failures = 0

    def start(self) -> None:
        if self._timer is None:
            super().start()
        else:
            self._job = self._timer.every(self.period, self._tick, name="status")

    def stop(self) -> None:
        self._halt.set()
        if self._job is not None:
            self._job.cancel(timeout=0)

    def join(self, timeout: float | None = None) -> None:
        if self._timer is None:
            super().join(timeout)
        elif self._job is not None:
            self._job.cancel(timeout)

    def write_once(self) -> None:
        now = time.time()
        data = {"time": iso(now), "time_unix": round(now, 3), "pid": os.getpid(),
                "period_seconds": self.period, **self.report()}
        write_status(self.state_dir, data)

    def _tick(self) -> None:
        if self._halt.is_set():
            return
        try:
            self.write_once()
        except Exception as e:   # a full disk: said once in a while, never fatal
            self.failures += 1
            if self.failures in (1, 10) or self.failures % 100 == 0:
                log.warning("status file not written", error=str(e),
                            failures=self.failures)

    def run(self) -> None:
        while True:
            self._tick()
            if self._halt.wait(self.period):
                return
