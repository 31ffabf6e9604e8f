"""Admission budgets: token buckets, per-address enrollment gate, refusal log, streams."""

from __future__ import annotations

import logging
import threading

import pytest

from collector.admission import (
    OVERFLOW,
    DeadlineWatch,
    EnrollGate,
    RefusalLog,
    StreamGate,
    TokenBucket,
    address_of,
)
from tests.harness import wait_for


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize(("peer", "address"), [
    ("ipv4:10.0.0.7:51000", "10.0.0.7"),
    ("ipv6:[::1]:4444", "::1"),
    ("ipv6:[2001:db8:1:2:aaaa::1]:4444", "2001:db8:1:2::/64"),
    ("ipv6:[2001:db8:1:2:ffff::9]:1", "2001:db8:1:2::/64"),
    ("ipv6:[::ffff:192.0.2.1]:1", "192.0.2.1"),
    ("unix:/run/x.sock", "unix"),
    ("ipv6:[not-an-address]:1", "not-an-address"),
    ("", "unknown"),
])
def test_address_of_peer(peer: str, address: str) -> None:
    assert address_of(peer) == address


def test_bucket_refills_at_its_rate_up_to_its_burst() -> None:
    clock = Clock()
    bucket = TokenBucket(rate=2.0, burst=3, clock=clock)
    assert [bucket.try_take() for _ in range(4)] == [True, True, True, False]
    clock.now += 0.5
    assert bucket.try_take() and not bucket.try_take()
    clock.now += 100
    assert bucket.full and bucket.tokens == 3


def test_reservations_queue_behind_each_others_debt() -> None:
    clock = Clock()
    bucket = TokenBucket(rate=100.0, burst=100, clock=clock)
    assert bucket.reserve(100) == 0.0
    assert bucket.reserve(50) == pytest.approx(0.5)
    assert bucket.reserve(50) == pytest.approx(1.0)   # a second caller waits for both


def test_refusals_are_logged_once_per_address_per_window(
        caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    refusals = RefusalLog("enrollment attempts", window=60, clock=clock)
    with caplog.at_level(logging.WARNING, logger="sisguard.collector.admission"):
        for _ in range(50):
            refusals.refused("10.0.0.7", "bad token")
        refusals.refused("10.0.0.8", "bad token")
        clock.now += 61
        refusals.refused("10.0.0.7", "too many")
    lines = [r for r in caplog.records if r.getMessage() == "enrollment attempts refused"]
    fields = [getattr(r, "fields") for r in lines]  # noqa: B009
    assert [(f["address"], f["refused_in_previous_window"]) for f in fields] == [
        ("10.0.0.7", 0), ("10.0.0.8", 0), ("10.0.0.7", 50)]
    assert refusals.counts() == {"bad token": 51, "too many": 1}


def test_refusal_log_is_bounded_and_shares_one_entry_when_full() -> None:
    clock = Clock()
    refusals = RefusalLog("x", window=60, max_keys=3, clock=clock)
    for i in range(10):
        refusals.refused(f"10.0.0.{i}", "r")
    assert refusals.logged == 4   # three addresses, then the overflow entry once
    clock.now += 61
    refusals.refused("10.0.1.1", "r")   # windows over: forgotten, room again
    assert refusals.logged == 5


def test_enroll_gate_limits_calls_in_progress_and_attempts_per_address() -> None:
    clock = Clock()
    gate = EnrollGate(per_address_concurrent=2, per_minute=60, burst=3, log_window=60,
                      clock=clock)
    a, b = gate.admit("ipv4:10.0.0.7:1"), gate.admit("ipv4:10.0.0.7:2")
    third = gate.admit("ipv4:10.0.0.7:3")
    assert isinstance(third, str) and "in progress from 10.0.0.7" in third
    assert not isinstance(gate.admit("ipv4:10.0.0.8:1"), str)   # another address is free
    assert not isinstance(a, str) and not isinstance(b, str)
    a.release()
    a.release()   # idempotent: gives back one place only
    c = gate.admit("ipv4:10.0.0.7:4")
    assert not isinstance(c, str)
    c.release()
    b.release()
    over = gate.admit("ipv4:10.0.0.7:5")   # three attempts used: the bucket is empty
    assert isinstance(over, str) and "at most 60 a minute" in over
    clock.now += 1.0
    assert not isinstance(gate.admit("ipv4:10.0.0.7:6"), str)


def test_enroll_gate_table_is_bounded() -> None:
    gate = EnrollGate(per_address_concurrent=1, per_minute=60, burst=1, log_window=60,
                      max_addresses=2, clock=Clock())
    held = [gate.admit(f"ipv4:10.0.0.{i}:1") for i in range(2)]
    assert all(not isinstance(h, str) for h in held)
    lease = gate.admit("ipv4:10.0.9.9:1")
    assert not isinstance(lease, str) and lease.key == OVERFLOW
    assert isinstance(gate.admit("ipv4:10.0.9.10:1"), str)   # overflow shares one budget


def test_deadline_watch_cancels_only_calls_still_armed() -> None:
    watch = DeadlineWatch()
    watch.start()
    try:
        cancelled: list[str] = []
        done = threading.Event()
        def late() -> None:
            cancelled.append("late")
            done.set()

        watch.arm(0.05, late)
        ticket = watch.arm(0.05, lambda: cancelled.append("answered"))
        watch.disarm(ticket)
        wait_for(done.is_set, timeout=5, message="the late call cancelled")
        assert cancelled == ["late"] and watch.cancelled == 1
    finally:
        watch.stop()


def test_stream_gate_counts_streams_per_agent() -> None:
    gate = StreamGate(max_streams_per_agent=2, events_per_second=10,
                      stopping=threading.Event())
    r1, r2 = gate.open("a"), gate.open("a")
    assert r1 is not None and r2 is not None
    assert gate.open("a") is None and gate.refused_streams == 1
    assert gate.open("b") is not None
    r1()
    r1()   # idempotent
    assert gate.streams("a") == 1
    assert gate.open("a") is not None


def test_one_bucket_per_agent_across_its_streams() -> None:
    clock = Clock()
    stopping = threading.Event()
    gate = StreamGate(max_streams_per_agent=2, events_per_second=100, stopping=stopping,
                      clock=clock)
    assert gate.throttle("a", 100)            # the burst
    assert gate.throttle("b", 100)            # another agent has its own
    stopping.set()                            # the wait is cut short, and says so
    assert not gate.throttle("a", 50)
    assert gate.throttled_seconds == pytest.approx(0.5)
    assert not gate.throttle("a", 50, is_active=lambda: False)
    assert gate.throttled_seconds == pytest.approx(1.5)
