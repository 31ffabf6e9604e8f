"""Differential test: CorrelationState against the reference state it replaced.

Random streams of matches (mostly in time order, some late, some without the group or
value field, list and number values, bursts in few groups) go to both; every feed must
give the same firings (event ids, the same last event object, time) and the same
counters, for each correlation type and condition, with small group and match bounds so
that eviction and dropping happen too; with the group key computed by feed() or given
to it (the engine computes it once for correlations that group alike).

Partitioned by sender (an intended change of semantics, time per agent): for each agent,
the same firings as a reference state fed only that agent's matches.
"""

from __future__ import annotations

import random
from typing import Any

import pytest

from collector.detection.correlation import CorrelationState
from collector.detection.rules import IDENTITY_PATH, CorrelationRule, CorrelationType, RuleMeta
from common.errors import Location
from tests.collector.detection.correlation_reference import (
    CorrelationState as ReferenceState,
)

REFS = ("first", "second", "third")
OPS = ("gt", "gte", "lt", "lte", "eq")
Feed = tuple[str, dict[str, Any], float, tuple[str, ...]]  # reference, event, time, ids


def correlation(kind: CorrelationType, op: str, count: float, refs: int,
                timespan: float) -> CorrelationRule:
    references = REFS[:refs]
    rule = CorrelationRule(
        meta=RuleMeta(id=f"c-{kind.value}-{op}", title="differential"),
        location=Location("differential.yml"), type=kind, references=references,
        group_by=("source.ip", "host.name"), timespan=timespan, op=op, count=count,
        value_field="user.name" if kind is CorrelationType.VALUE_COUNT else None,
        aliases={}, fingerprint="f")
    for ref in references:
        rule.group_paths[ref] = ("source.ip", "host.name")
        if kind is CorrelationType.VALUE_COUNT:
            rule.value_paths[ref] = "user.name"
    return rule


def event(rnd: random.Random, n: int) -> dict[str, Any]:
    doc: dict[str, Any] = {"event": {"id": f"e{n}"}}
    if rnd.random() < 0.95:
        doc["source"] = {"ip": rnd.choice(["10.0.0.1", "10.0.0.2", "10.0.0.3", 7,
                                           ["10.0.0.1", "10.0.0.9"]])}
    if rnd.random() < 0.5:
        doc["host"] = {"name": rnd.choice(["web1", "web2"])}
    else:
        doc["host.name"] = "web1"
    if rnd.random() < 0.9:
        doc["user"] = {"name": rnd.choice(["root", "admin", "oracle", "guest", 3, True])}
    return doc


def stream(seed: int, length: int) -> list[Feed]:
    rnd = random.Random(seed)
    ts = 1_000.0
    out: list[Feed] = []
    for n in range(length):
        ts += rnd.choice([0.0, 0.5, 1.0, 2.0, 7.0, 30.0, 200.0]) if rnd.random() < 0.9 else 0
        late = rnd.random() < 0.1
        at = ts - rnd.choice([1.0, 20.0, 90.0]) if late else ts
        ids = (f"e{n}",) if rnd.random() < 0.9 else (f"e{n}", f"e{n - 1}")
        out.append((rnd.choice(REFS), event(rnd, n), at, ids))
    return out


CASES = [(kind, op, count, refs)
         for kind in CorrelationType
         for op in OPS
         for count, refs in ([(1, 2), (2, 3)] if kind in (CorrelationType.TEMPORAL,
                                                          CorrelationType.TEMPORAL_ORDERED)
                             else [(0, 1), (2, 1), (2.5, 2), (5, 1)])]


@pytest.mark.parametrize(("kind", "op", "count", "refs"), CASES)
def test_same_firings_and_counters_as_the_reference(kind: CorrelationType, op: str,
                                                    count: float, refs: int) -> None:
    for seed in range(4):
        rule = correlation(kind, op, count, refs, timespan=rnd_span(seed))
        max_groups = (3, 1_000, 6, 1_000)[seed]  # evicting, and expiring only
        new = CorrelationState(rule, max_groups=max_groups, max_events=4 + 2 * seed)
        old = ReferenceState(rule, max_groups=max_groups, max_events=4 + 2 * seed)
        for step, (ref, doc, ts, ids) in enumerate(stream(seed, 400)):
            if ref not in rule.references:
                ref = rule.references[-1]
            make_key = new.key_function(ref)
            key = make_key(doc) if make_key is not None and seed % 2 else None  # as the engine
            got = [(f.event_ids, id(f.last), f.ts) for f in new.feed(ref, doc, ts, ids, key)]
            want = [(f.event_ids, id(f.last), f.ts) for f in old.feed(ref, doc, ts, ids)]
            assert got == want, (seed, step)
            assert same_counters(new, old), (seed, step)


def same_counters(new: CorrelationState, old: ReferenceState) -> bool:
    """The reference's counters (the new state has more: bytes, senders)."""
    mine = new.stats()
    return {k: mine[k] for k in old.stats()} == old.stats()


def by_sender(kind: CorrelationType, op: str, count: float, refs: int,
              timespan: float) -> CorrelationRule:
    """The rule as linking makes it: the sender's identity first in the group key."""
    rule = correlation(kind, op, count, refs, timespan)
    for ref in rule.references:
        rule.group_paths[ref] = (IDENTITY_PATH, *rule.group_paths[ref])
    return rule


@pytest.mark.parametrize(("kind", "op", "count", "refs"), CASES)
def test_each_sender_as_if_alone(kind: CorrelationType, op: str, count: float,
                                 refs: int) -> None:
    """Intended change (time per sender): a state grouping by agent.id gives, for the
    matches of every agent, the firings the reference gives when fed only that agent's
    matches; one agent's clock (here agent b, whose clock runs far ahead, or far
    behind) never expires another's groups."""
    for seed in range(4):
        rule = by_sender(kind, op, count, refs, timespan=rnd_span(seed))
        new = CorrelationState(rule, max_events=4 + 2 * seed)
        alone = {agent: ReferenceState(rule, max_events=4 + 2 * seed) for agent in "ab"}
        rnd = random.Random(seed)
        skew = (0.0, 86_400.0 * 365 * 70, -3_600.0, 500.0)[seed]
        for step, (ref, doc, ts, ids) in enumerate(stream(seed, 400)):
            if ref not in rule.references:
                ref = rule.references[-1]
            agent = rnd.choice("ab")
            doc["agent"] = {"id": agent}
            at = ts + skew if agent == "b" else ts
            got = [(f.event_ids, id(f.last), f.ts) for f in new.feed(ref, doc, at, ids)]
            want = [(f.event_ids, id(f.last), f.ts) for f in alone[agent].feed(ref, doc, at, ids)]
            assert got == want, (seed, step)
        assert new.group_count == sum(s.group_count for s in alone.values())


def rnd_span(seed: int) -> float:
    return (10.0, 60.0, 300.0, 5.0)[seed % 4]
