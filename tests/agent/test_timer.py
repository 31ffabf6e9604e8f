"""The agent's one timer thread: order, coalescing, no catch-up, errors, cancel, stop."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator

import pytest

from agent.timer import Timer
from tests.harness import wait_for


@pytest.fixture
def timer() -> Iterator[Timer]:
    t = Timer(name="test-timer")
    yield t
    t.stop()
    t.join(timeout=5)
    assert t._thread is None or not t._thread.is_alive()   # no thread leaks


def test_jobs_run_in_due_order_on_one_thread(timer: Timer) -> None:
    ran: list[tuple[str, str]] = []
    def job(name: str) -> Callable[[], None]:
        return lambda: ran.append((name, threading.current_thread().name))

    for name, first in (("c", 0.30), ("a", 0.0), ("b", 0.15)):
        timer.every(60, job(name), name=name, first=first)
    wait_for(lambda: len(ran) == 3, timeout=10)
    assert ran == [("a", "test-timer"), ("b", "test-timer"), ("c", "test-timer")]


def test_idle_timer_does_not_wake_and_jobs_due_together_share_a_wakeup(timer: Timer) -> None:
    counts = {"x": 0, "y": 0}

    def bump(key: str) -> None:
        counts[key] += 1

    x = timer.every(0.2, lambda: bump("x"), name="x")
    timer.every(0.4, lambda: bump("y"), name="y", first=0.13)   # another phase at start
    wait_for(lambda: counts["x"] >= 10, timeout=20)
    # after their first runs both fall on the same 0.2 s grid: one wakeup per tick
    assert timer.wakeups <= counts["x"] + 3
    assert counts["y"] >= 2
    x.cancel()
    for job in timer.jobs:
        job.cancel()
    asleep = timer.wakeups
    assert timer.jobs == []
    # nothing scheduled: the thread ends (no wakeups at all); a new job starts another
    wait_for(lambda: timer._thread is None, timeout=10)
    done = threading.Event()
    timer.every(60, done.set, name="z", first=0.0)
    wait_for(done.is_set, timeout=10)
    assert timer.wakeups - asleep <= 2


def test_a_failing_job_is_counted_and_the_others_go_on(timer: Timer) -> None:
    ok: list[int] = []

    def boom() -> None:
        raise RuntimeError("one bad poll")

    bad = timer.every(0.05, boom, name="bad")
    timer.every(0.05, lambda: ok.append(1), name="ok")
    wait_for(lambda: bad.errors >= 3 and len(ok) >= 3, timeout=10)
    assert bad.runs == 0


def test_an_overrunning_job_does_not_catch_up(timer: Timer) -> None:
    starts: list[float] = []
    release = threading.Event()
    now = [0.0]
    t = Timer(name="fake-clock", clock=lambda: now[0])
    try:
        def slow() -> None:
            starts.append(now[0])
            if len(starts) == 1:
                now[0] = 10.0          # the first run "took" 10 periods
            release.set()

        t.every(1.0, slow, name="slow")
        wait_for(release.is_set, timeout=10)
        wait_for(lambda: t.jobs and t.jobs[0].due > 0, timeout=10)
        assert t.jobs[0].due == 11.0   # the next tick after the late end, not 1, 2, ... 10
    finally:
        t.stop()
        t.join(timeout=5)


def test_cancel_waits_for_a_run_under_way(timer: Timer) -> None:
    entered, leave = threading.Event(), threading.Event()
    finished: list[bool] = []

    def long_job() -> None:
        entered.set()
        leave.wait(10)
        finished.append(True)

    job = timer.every(60, long_job, name="long")
    wait_for(entered.is_set, timeout=10)
    assert not job.cancel(timeout=0.05)     # still running: says so
    leave.set()
    assert job.cancel(timeout=10) and finished == [True]


def test_stopped_timer_refuses_jobs_and_bad_intervals() -> None:
    t = Timer()
    with pytest.raises(ValueError, match="interval"):
        t.every(0, lambda: None, name="zero")
    t.stop()
    with pytest.raises(RuntimeError, match="stopped"):
        t.every(1, lambda: None, name="late")
