"""What the process sensor lost in a flood, and when to sweep ``/proc`` and say so.

The kernel's process connector drops events when the agent's receive buffer is full and
tells us only that it happened (``recv`` fails once with ``ENOBUFS``), not how many. The
reader's queue to the worker can fill up too. Each such loss asks for a sweep of
``/proc`` (at most one per ``sweep_interval``), which reports the running processes not
seen yet; the losses and what the sweeps found are reported as one ``sensor_error`` at
most every ``report_interval`` seconds, with the counts since the last report and since
the agent started. The reader thread records losses; the worker thread sweeps and reports.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

Report = Callable[[str, "dict[str, Any]"], None]


class LossAccount:
    def __init__(self, report: Report, *, sweep_interval: float = 1.0,
                 report_interval: float = 5.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._report = report
        self.sweep_interval = sweep_interval
        self.report_interval = report_interval
        self._clock = clock
        self._lock = threading.Lock()
        self.overruns = self.dropped = self.found = 0          # since the last report
        self.total_overruns = self.total_dropped = self.total_found = 0
        self.reports = 0
        self._sweep_due = False
        self._last_sweep = float("-inf")
        self._last_report = float("-inf")

    # the reader thread
    def overrun(self) -> None:
        """The kernel said ENOBUFS: events were dropped, how many is unknown."""
        with self._lock:
            self.overruns += 1
            self.total_overruns += 1
            self._sweep_due = True

    def drop(self, n: int = 1) -> None:
        """``n`` events did not fit in the reader's queue to the worker."""
        with self._lock:
            self.dropped += n
            self.total_dropped += n
            self._sweep_due = True

    # the worker thread
    def take_sweep(self) -> bool:
        """True (once) when a sweep is due now; the caller then sweeps and calls swept."""
        with self._lock:
            if not self._sweep_due or self._clock() - self._last_sweep < self.sweep_interval:
                return False
            self._sweep_due = False
            self._last_sweep = self._clock()
            return True

    def swept(self, found: int) -> None:
        with self._lock:
            self.found += found
            self.total_found += found

    def report_if_due(self) -> bool:
        """Emit the sensor_error if there is something to say, no sweep is pending and the
        last report is ``report_interval`` old. True if it reported."""
        with self._lock:
            pending = self.overruns or self.dropped or self.found
            if (not pending or self._sweep_due
                    or self._clock() - self._last_report < self.report_interval):
                return False
            fields: dict[str, Any] = {
                "overruns": self.overruns, "overruns_total": self.total_overruns,
                "queue_dropped": self.dropped, "queue_dropped_total": self.total_dropped,
                "found_by_sweep": self.found, "found_by_sweep_total": self.total_found}
            self.overruns = self.dropped = self.found = 0
            self._last_report = self._clock()
            self.reports += 1
        self._report(_message(fields), {"reason": "process events lost", **fields})
        return True

    def wait_time(self) -> float | None:
        """How long the worker may sleep before a sweep or a report falls due (None:
        nothing pending, sleep until the next event; the reader wakes it on a loss)."""
        with self._lock:
            now = self._clock()
            if self._sweep_due:
                due = self._last_sweep + self.sweep_interval
            elif self.overruns or self.dropped or self.found:
                due = self._last_report + self.report_interval
            else:
                return None
        return max(0.01, due - now)


def _message(f: dict[str, Any]) -> str:
    parts = []
    if f["overruns"]:
        parts.append(f"the kernel's process-event buffer overran {f['overruns']} times "
                     "(it does not say how many events it dropped)")
    if f["queue_dropped"]:
        parts.append(f"{f['queue_dropped']} events did not fit in the worker queue")
    lost = "; ".join(parts) or "no new loss"
    return (f"process events lost: {lost}; the /proc sweep found {f['found_by_sweep']} "
            "running processes not reported before (sisguard.process.found_by: sweep); "
            f"since start: {f['overruns_total']} overruns, {f['queue_dropped_total']} "
            f"queue drops, {f['found_by_sweep_total']} found by sweep")
