"""Correlation state keeps only what an alert needs, under a byte budget, evicting the
groups of the sender holding the most first, every eviction counted."""

from __future__ import annotations

import gc
import tracemalloc
from datetime import timedelta
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from collector.detection import DetectionEngine
from collector.detection.correlation import CorrelationState
from collector.detection.matcher import lookup
from collector.detection.rules import CorrelationType
from collector.detection.state_size import estimate, kept_paths, slim
from tests.collector.detection.test_clock import BRUTE_FORCE, NOW, auth_rules, failure
from tests.collector.detection.test_correlation_state import by_sender

__all__ = ["auth_rules"]  # the fixture, shared with test_clock.py

MB = 1024 * 1024


def test_200_one_megabyte_events_keep_only_what_alerts_need(auth_rules: Any) -> None:
    engine = DetectionEngine(auth_rules)
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for i in range(200):  # distinct addresses: 200 groups of one match each
            event = failure("agent-a", NOW + timedelta(seconds=i), source=f"10.0.{i}.1")
            event["message"] = "x" * MB
            event["process"]["command_line"] = "y" * MB
            engine.process(event)
            del event
        gc.collect()
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    stats = engine.stats()
    # 200 MiB went through; what stays is about a kilobyte per match and correlation
    assert stats["state_bytes"] < 2 * MB, stats["state_bytes"]
    assert held < 4 * MB, held


def test_state_bytes_stay_under_the_budget_with_megabyte_group_values(
        auth_rules: Any) -> None:
    """A rogue agent whose group-by value itself is a megabyte: state stays under budget,
    and an honest agent's brute force is still seen (the rogue evicts its own groups)."""
    budget = 8 * MB
    engine = DetectionEngine(auth_rules, max_state_bytes=budget)
    alerts: list[dict[str, Any]] = []
    for i in range(3):
        alerts += engine.process(failure("honest", NOW + timedelta(seconds=i)))
    for i in range(200):
        rogue = failure("rogue", NOW + timedelta(seconds=i % 50), source=f"{i:07d}" * 150_000)
        engine.process(rogue)
        assert engine.stats()["state_bytes"] <= budget
    for i in range(3, 6):
        alerts += engine.process(failure("honest", NOW + timedelta(seconds=i)))
    assert [a["agent"]["id"] for a in alerts if a["rule"]["id"] == BRUTE_FORCE] == ["honest"]
    stats = engine.stats()
    evicted = sum(c["evicted_for_bytes"] + c["dropped_for_bytes"]
                  for c in stats["correlations"].values())
    assert evicted >= 150, stats["correlations"]


def test_one_group_over_its_share_loses_its_oldest_matches() -> None:
    rule = by_sender(CorrelationType.EVENT_COUNT, "gt", 1000, 1, 3600)
    state = CorrelationState(rule, max_bytes=10_000)
    for n in range(100):
        doc = {"agent": {"id": "a"}, "source": {"ip": "10.0.0.1"}, "host": {"name": "h"},
               "pad": "p" * 500}
        state.feed("first", doc, float(n), (f"e{n}",))
        assert state.state_bytes <= 10_000
    stats = state.stats()
    assert stats["groups"] == 1 and stats["dropped_for_bytes"] > 0


def test_slim_keeps_exactly_the_needed_paths() -> None:
    paths = kept_paths(["source.ip", "host.name", "user.name", "%initiated"])
    doc = {"@timestamp": "t", "event": {"ingested": "i", "dataset": "d", "action": "a",
                                        "original": "o" * 1000},
           "source.ip": "1.2.3.4", "user": [{"name": "u1"}, {"name": "u2"}],
           "host": {"name": "h", "os": {"name": "linux"}}, "message": "m" * 10_000}
    kept = slim(doc, paths)
    assert kept == {"@timestamp": "t", "event": {"ingested": "i", "dataset": "d",
                                                   "action": "a"},
                    "source": {"ip": "1.2.3.4"}, "user": {"name": ["u1", "u2"]},
                    "host": {"name": "h", "os": {"name": "linux"}}}
    assert estimate(kept) < 4000 < 10_000 < estimate(doc)


def test_estimate_is_bounded_for_hostile_values() -> None:
    deep: Any = "x"
    for _ in range(10_000):
        deep = [deep]
    assert estimate(deep) >= MB   # counted as large, without recursing 10,000 deep
    wide = {str(i): i for i in range(100_000)}
    assert estimate(wide) >= MB


_leaf = st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=5))
_docs = st.recursive(_leaf, lambda inner: st.one_of(
    st.lists(inner, max_size=3),
    st.dictionaries(st.sampled_from(["a", "b", "c", "id", "name"]), inner,
                    max_size=4)), max_leaves=12)


@settings(max_examples=1000, deadline=None)
@given(doc=st.dictionaries(st.sampled_from(["a", "b", "c", "host", "agent", "@timestamp"]),
                           _docs, max_size=6))
def test_slim_looks_up_as_the_event_does(doc: dict[str, Any]) -> None:
    """What a chained correlation reads of a kept document is what it would have read of
    the event: for every kept path and every path under one, lookup() gives the same
    value (documents nested and with arrays; see slim() on dotted keys)."""
    wanted = ["a.b", "a.b.c", "b", "c.a", "c.a.id", "host.name", "agent.id"]
    kept = slim(doc, kept_paths(wanted))
    for path in [*wanted, "@timestamp", "host", "agent"]:
        assert lookup(kept, path) == lookup(doc, path), path
