"""One thread for every periodic job of the agent (``Timer``).

An idle agent is threads waiting with timeouts; each wakeup costs CPU (tens of
microseconds in CPython: the GIL, the condition's lock, the scheduler) and, more than
its CPU, keeps the core from sleeping. The polling sensors (network, inventory), the
web-server config re-read and the status file therefore share one thread that sleeps
until the next job is due. After its first run a job falls due on multiples of its
interval on the monotonic clock, so that jobs with intervals that divide each other run
on the same wakeup (so do jobs due within ``slack`` seconds of each other); with no job
left the thread ends (the next ``every`` starts another).

Jobs run one after the other on that thread: a job must be short (a poll, a file
write). A job that overruns is not run twice to catch up: it skips the runs it
missed. A job's exception is logged and counted on the job; the
timer and the other jobs carry on. ``Job.cancel`` waits for a run under way to end, so
a sensor's ``join`` knows its job will not touch its state again.
"""

from __future__ import annotations

import heapq
import itertools
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from common.logs import get_logger

log = get_logger("sisguard.agent.timer")


@dataclass(eq=False)
class Job:
    name: str
    interval: float
    fn: Callable[[], None] = field(repr=False)
    timer: Timer = field(repr=False)
    due: float = 0.0
    runs: int = 0
    errors: int = 0
    cancelled: bool = False
    running: bool = False

    def cancel(self, timeout: float | None = None) -> bool:
        """No more runs; wait (at most ``timeout``) for one under way. True when none is
        running any more (always True when called from the job itself)."""
        return self.timer.cancel(self, timeout)


class Timer:
    def __init__(self, *, name: str = "timer", slack: float = 0.05,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.name = name
        self.slack = slack
        self._clock = clock
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int, Job]] = []
        self._seq = itertools.count()
        self._thread: threading.Thread | None = None
        self._stopping = False
        self.wakeups = 0      # times the thread woke (to run jobs or for a new one)

    def every(self, interval: float, fn: Callable[[], None], *, name: str,
              first: float = 0.0) -> Job:
        """Run ``fn`` in ``first`` seconds, then every ``interval`` seconds."""
        if interval <= 0:
            raise ValueError(f"timer job {name}: interval must be > 0, not {interval}")
        job = Job(name, float(interval), fn, self, due=self._clock() + max(0.0, first))
        with self._cond:
            if self._stopping:
                raise RuntimeError(f"timer job {name}: the timer is stopped")
            heapq.heappush(self._heap, (job.due, next(self._seq), job))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=self.name,
                                                daemon=True)
                self._thread.start()
            self._cond.notify_all()
        return job

    def cancel(self, job: Job, timeout: float | None = None) -> bool:
        with self._cond:
            job.cancelled = True
            self._cond.notify_all()
            if threading.current_thread() is self._thread:
                return True
            return self._cond.wait_for(lambda: not job.running, timeout)

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            for _, _, job in self._heap:
                job.cancelled = True
            self._cond.notify_all()

    def join(self, timeout: float | None = None) -> None:
        if self._thread is not None:
            self._thread.join(timeout)

    @property
    def jobs(self) -> list[Job]:
        with self._cond:
            return [job for _, _, job in self._heap if not job.cancelled]

    def _next_due(self, job: Job) -> float:
        """The next multiple of the job's interval on the clock (after now): jobs whose
        intervals divide each other (0.5 s, 1 s, 2 s, 30 s) then fall due together and
        share one wakeup, whatever their phase at start. An overrunning job skips the
        runs it missed rather than catching up in a burst."""
        now = self._clock()
        due = (math.floor(now / job.interval) + 1) * job.interval
        return due if due - now > self.slack else due + job.interval

    def _due(self) -> list[Job]:
        """Wait until some job is due; pop every job due within the slack."""
        while not self._stopping:
            while self._heap and self._heap[0][2].cancelled:
                heapq.heappop(self._heap)
            if not self._heap:   # nothing scheduled: the thread ends (``every`` starts one)
                self._thread = None
                return []
            wait = self._heap[0][0] - self._clock()
            if wait > self.slack:
                self._cond.wait(wait)
                self.wakeups += 1
                continue
            now = self._clock()
            ready: list[Job] = []
            while self._heap and self._heap[0][0] <= now + self.slack:
                _, _, job = heapq.heappop(self._heap)
                if not job.cancelled:
                    job.running = True
                    ready.append(job)
            if ready:
                return ready
        return []

    def _run(self) -> None:
        while True:
            with self._cond:
                ready = self._due()
                if not ready:
                    if self._thread is threading.current_thread():
                        self._thread = None
                    return
            for job in ready:
                try:
                    if not job.cancelled:
                        job.fn()
                        job.runs += 1
                except Exception as e:   # one job's bug never stops the others
                    job.errors += 1
                    log.exception("timer job failed", job=job.name,
                                  error=f"{type(e).__name__}: {e}")
                finally:
                    with self._cond:
                        job.running = False
                        if not job.cancelled and not self._stopping:
                            job.due = self._next_due(job)
                            heapq.heappush(self._heap, (job.due, next(self._seq), job))
                        self._cond.notify_all()
