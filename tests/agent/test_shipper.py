"""Shipper reconnect backoff: full jitter, capped (no herd after a collector restart)."""

from __future__ import annotations

import random
from collections.abc import Callable

from agent.shipper import reconnect_delay


def test_full_jitter_spreads_each_window_from_zero_to_its_end() -> None:
    rng = random.Random(7)
    for attempt, window in ((0, 0.5), (1, 1.0), (3, 4.0), (6, 30.0), (40, 30.0), (10**6, 30.0)):
        draws = [reconnect_delay(attempt, initial=0.5, cap=30.0, rng=rng) for _ in range(2000)]
        assert all(0.0 <= d <= window for d in draws), attempt
        # the whole window is used, not a band around one value (the old +-20 %)
        assert min(draws) < window * 0.05 and max(draws) > window * 0.95, attempt
        buckets = [0] * 10
        for d in draws:
            buckets[min(9, int(d / window * 10))] += 1
        assert min(buckets) > 120, (attempt, buckets)   # ~200 each when uniform


def _arrivals(delay: Callable[[int], float], back_at: float = 3.0) -> list[float]:
    """When each of 1,000 agents that lost the stream at 0 first reaches a collector
    that is back at ``back_at``."""
    arrivals = []
    for _ in range(1000):
        t, attempt = 0.0, 0
        while True:
            t += delay(attempt)
            if t >= back_at:
                break
            attempt += 1
        arrivals.append(t)
    return arrivals


def _busiest_second(arrivals: list[float]) -> int:
    per_second: dict[int, int] = {}
    for t in arrivals:
        per_second[int(t)] = per_second.get(int(t), 0) + 1
    return max(per_second.values())


def test_a_thousand_agents_after_a_restart_are_not_a_herd() -> None:
    rng = random.Random(11)
    ours = _arrivals(lambda n: reconnect_delay(n, initial=0.5, cap=30.0, rng=rng))
    # the backoff before: the doubling delay times uniform(0.8, 1.2)
    before = _arrivals(lambda n: min(0.5 * 2 ** n, 30.0) * rng.uniform(0.8, 1.2))
    assert max(ours) <= 3.0 + 30.0
    assert _busiest_second(before) > 500          # the herd: most agents in one second
    assert _busiest_second(ours) < 400            # spread over the backoff's window
