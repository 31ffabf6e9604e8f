"""Correlation state: counts and sequences of rule matches over event time.

One ``CorrelationState`` per correlation rule, guarded by its own lock. Matches are
grouped by the group-by values; each group keeps the matches of the last ``timespan``
seconds of event time (``@timestamp``, clamped by the engine: clock.py).

Time is per sender: when the rule's group key starts with ``agent.id`` (the linker puts
it first in every correlation: correlation_rules.py), the groups are partitioned by that
value and each partition has its own watermark, the newest event time of that agent.
Groups whose newest match is older than their partition's watermark minus ``timespan``
expire; an agent dating an event 2099 expires only its own groups, never another's.

State is bounded: at most ``max_groups`` groups, ``max_events`` matches per group and
``max_bytes`` bytes (what a match costs: state_size.py). Over a bound, the oldest groups
of the partition holding the most (groups for ``max_groups``, bytes for ``max_bytes``) go
first, so an agent filling the state evicts its own groups before anyone else's; a
single group over the byte budget loses its oldest matches. Every eviction is counted.

When a group satisfies the condition it fires once and starts afresh, so a burst of
fifty failed logins raises one alert per threshold crossing, not fifty.

A match is kept as a plain tuple ``(ts, event_ids, doc, value, size)``: ``doc`` is what
the engine keeps of the event (state_size.slim), the alert needs the ids and the last
one. Expiry is lazy but exact: a partition keeps its groups oldest-updated first and
``front`` is the oldest, so a new event time only walks the groups when the oldest of
them has fallen out of its window.
``gt/gte/eq`` are checked on each match; ``lt/lte`` when a group's window closes
(no match for ``timespan``), since "fewer than" is only known at the end.
"""

from __future__ import annotations

import itertools
import threading
from collections import OrderedDict, deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from math import ceil, floor
from typing import Any, NamedTuple

from collector.detection.getters import KeyFunction, field_getter, group_key_function, key_part
from collector.detection.matcher import as_text, lookup
from collector.detection.rules import IDENTITY_PATH, CorrelationRule, CorrelationType
from collector.detection.state_size import entry_size

DEFAULT_MAX_GROUPS = 10_000
DEFAULT_MAX_EVENTS = 1_000
DEFAULT_MAX_BYTES = 256 * 1024 * 1024

_OPS: dict[str, Callable[[float, float], bool]] = {
    "gt": lambda a, b: a > b, "gte": lambda a, b: a >= b,
    "lt": lambda a, b: a < b, "lte": lambda a, b: a <= b,
    "eq": lambda a, b: a == b,
}


# A rule match (or a fired correlation) fed to a correlation: event time, event ids,
# what is kept of the event, for value_count the value of the counted field, its cost.
_Entry = tuple[float, tuple[str, ...], Mapping[str, Any], "str | None", int]
_NO_FIRINGS: tuple[Firing, ...] = ()


@dataclass(frozen=True)
class Firing:
    event_ids: tuple[str, ...]
    last: Mapping[str, Any]
    ts: float


class _Group(list[deque[_Entry]]):
    """The matches of one group: one deque per reference for the temporal types, one
    for the count types; ``last_ts`` is the time of its newest match. (A list subclass
    without ``__init__``: made at C speed, as a new group is on most feeds.)"""

    __slots__ = ("last_ts", "nbytes", "values")
    last_ts: float
    nbytes: int              # the sizes of its entries
    values: dict[Any, int]   # value_count: how many of the entries hold each value


class _Partition:
    """The groups of one sender (or all groups, for a rule not grouped by sender)."""

    __slots__ = ("front", "groups", "nbytes", "watermark")

    def __init__(self) -> None:
        self.groups: OrderedDict[tuple[Any, ...], _Group] = OrderedDict()
        self.front: _Group | None = None  # the least recently updated group
        self.watermark = float("-inf")    # the newest event time of this sender
        self.nbytes = 0


class _Feeder(NamedTuple):
    """What feed() needs of one reference: its slot, group key and counted value."""

    slot: int
    key: Callable[[Mapping[str, Any]], tuple[Any, ...]] | None
    value: Callable[[Mapping[str, Any]], Any] | None


def _fire_length(op: str, count: float) -> int | None:
    """For gt/gte: the fewest matches that can satisfy the condition (None: not gt/gte).

    The measure of event_count and value_count never exceeds the number of matches kept,
    so a group with fewer matches than this cannot fire and needs no evaluation.
    """
    if op == "gt":
        return floor(count) + 1
    if op == "gte":
        return ceil(count)
    return None


class CorrelationState:
    def __init__(self, rule: CorrelationRule, *, max_groups: int = DEFAULT_MAX_GROUPS,
                 max_events: int = DEFAULT_MAX_EVENTS,
                 max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self.rule = rule
        self.max_groups = max_groups
        self.max_events = max_events
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self._parts: dict[Any, _Partition] = {}
        self._group_total = 0
        self._bytes = 0
        self._span = rule.timespan
        self._check = _OPS[rule.op]
        self._closing = rule.op in ("lt", "lte")  # decided when a window closes
        self._counts = rule.type in (CorrelationType.EVENT_COUNT, CorrelationType.VALUE_COUNT)
        self._valued = rule.type is CorrelationType.VALUE_COUNT
        self._fire_len = _fire_length(rule.op, rule.count) if self._counts else None
        self._ordered = rule.type is CorrelationType.TEMPORAL_ORDERED
        self._slots = (len(rule.references)
                       if rule.type in (CorrelationType.TEMPORAL, CorrelationType.TEMPORAL_ORDERED)
                       else 1)
        self.evicted_groups = 0
        self.dropped_matches = 0
        self.evicted_for_bytes = 0   # groups evicted to stay within max_bytes
        self.dropped_for_bytes = 0   # matches of a single group over max_bytes
        self._link(rule)

    def _link(self, rule: CorrelationRule) -> None:
        self._group_keys = {ref: group_key_function(paths)
                            for ref, paths in rule.group_paths.items()}
        self._value_getters = {ref: field_getter(path)
                               for ref, path in rule.value_paths.items()}
        # Time per sender when every reference's key starts with the sender's identity.
        self._by_sender = bool(rule.group_paths) and all(
            paths[:1] == (IDENTITY_PATH,) for paths in rule.group_paths.values())
        self._feeders: dict[str, _Feeder] = {}
        for i, ref in enumerate(rule.references):  # a repeated reference: its first slot
            self._feeders.setdefault(ref, _Feeder(i if self._slots > 1 else 0,
                                                  self._group_keys.get(ref),
                                                  self._value_getters.get(ref)))

    def relink(self, rule: CorrelationRule) -> None:
        """Same definition, new rule object (after a reload)."""
        self.rule = rule
        self._link(rule)

    @property
    def group_count(self) -> int:
        return self._group_total

    @property
    def state_bytes(self) -> int:
        return self._bytes

    def group_key(self, ref: str, doc: Mapping[str, Any]) -> tuple[Any, ...]:
        key = self._group_keys.get(ref)
        if key is None:  # not linked (no group-by for this reference)
            return tuple(key_part(lookup(doc, p)) for p in self.rule.group_paths.get(ref, ()))
        return key(doc)

    def key_function(self, ref: str) -> KeyFunction | None:
        """The group key of a reference's matches (None: computed by group_key())."""
        feeder = self._feeders.get(ref)
        return None if feeder is None else feeder.key

    def feed(self, ref: str, doc: Mapping[str, Any], ts: float,
             event_ids: tuple[str, ...], key: tuple[Any, ...] | None = None,
             size: int | None = None) -> Sequence[Firing]:
        """Add a match; ``key``, when given, is ``key_function(ref)(doc)``; ``size``,
        when given, is ``state_size.entry_size(doc)``."""
        feeder = self._feeders.get(ref)
        if feeder is None:  # not a reference of this rule: as the rule's first one
            feeder = _Feeder(0, None, None)
        slot, make_key, getter = feeder
        value = None
        if self._valued:
            value = as_text(getter(doc) if getter is not None
                            else lookup(doc, self.rule.value_paths.get(ref, "")))
            if value is None:
                return _NO_FIRINGS
        if key is None:
            key = make_key(doc) if make_key is not None else self.group_key(ref, doc)
        if size is None:
            size = entry_size(doc)
        sender = key[0] if self._by_sender and key else None
        with self._lock:
            part = self._parts.get(sender)
            if part is None:
                part = self._new_partition(sender)
            firings: Sequence[Firing] = _NO_FIRINGS
            if ts > part.watermark:
                part.watermark = ts
                front = part.front
                if front is not None and front.last_ts < ts - self._span:
                    firings = self._expire(part, ts)
            groups = part.groups
            group = groups.get(key)
            if group is None:
                if self._group_total >= self.max_groups:
                    self._evict()
                entries: deque[_Entry] = deque()
                group = groups[key] = _Group(
                    (entries,) if self._slots == 1 else
                    [entries if i == slot else deque() for i in range(self._slots)])
                group.last_ts = ts
                group.nbytes = size
                self._group_total += 1
                if part.front is None:
                    part.front = group
                entries.append((ts, event_ids, doc, value, size))
                if self._valued:
                    group.values = {value: 1}
                part.nbytes += size
                self._bytes += size
            else:
                groups.move_to_end(key)
                if group is part.front:
                    part.front = next(iter(groups.values()))
                if ts > group.last_ts:
                    group.last_ts = ts
                entries = group[slot]
                entries.append((ts, event_ids, doc, value, size))
                group.nbytes += size
                part.nbytes += size
                self._bytes += size
                valued = self._valued   # keep the count of each value as entries come and go
                if valued:
                    group.values[value] = group.values.get(value, 0) + 1
                if len(entries) > self.max_events:
                    self._pop_oldest(part, group, entries)
                    self.dropped_matches += 1
                horizon = ts - self._span
                for dq in group:
                    while dq and dq[0][0] < horizon:
                        self._pop_oldest(part, group, dq)
            if self._bytes > self.max_bytes:
                self._shed(group)
            if self._closing:  # lt/lte: decided when the window closes (_expire)
                return firings
            fire_len = self._fire_len
            if fire_len is not None and len(entries) < fire_len:
                return firings  # the common case: too few matches to evaluate
            if self._ordered and (slot != self._slots - 1 or not all(group)):
                return firings  # no chain ends here, or a step has no match yet
            fired = self._evaluate(group, slot, closing=False)
            if fired is None:
                return firings
            for dq in group:
                dq.clear()
            if self._valued:
                group.values.clear()
            part.nbytes -= group.nbytes
            self._bytes -= group.nbytes
            group.nbytes = 0
        return [*firings, fired]

    def _new_partition(self, sender: Any) -> _Partition:
        parts = self._parts
        if len(parts) >= self.max_groups:  # senders without groups: forget their clocks
            for name in [n for n, p in parts.items() if not p.groups]:
                del parts[name]
        part = parts[sender] = _Partition()
        return part

    def _pop_oldest(self, part: _Partition, group: _Group, entries: deque[_Entry]) -> None:
        entry = entries.popleft()
        size = entry[4]
        group.nbytes -= size
        part.nbytes -= size
        self._bytes -= size
        if self._valued:
            _forget(group.values, entry)

    def _drop_front(self, part: _Partition) -> _Group:
        """Remove the partition's least recently updated group (it has one)."""
        _, group = part.groups.popitem(last=False)
        part.front = next(iter(part.groups.values()), None)
        part.nbytes -= group.nbytes
        self._bytes -= group.nbytes
        self._group_total -= 1
        return group

    def _evict(self) -> None:
        """Make room for a new group: the oldest groups of the partition with most."""
        parts = self._parts
        while self._group_total >= self.max_groups:
            part = (next(iter(parts.values())) if len(parts) == 1
                    else max(parts.values(), key=lambda p: len(p.groups)))
            if not part.groups:
                return
            self._drop_front(part)
            self.evicted_groups += 1

    def _shed(self, keep: _Group) -> None:
        """Back under max_bytes: the oldest groups (not ``keep``) of the partition holding
        the most bytes; when only ``keep`` is left there, its oldest matches."""
        parts = self._parts
        while self._bytes > self.max_bytes:
            part = (next(iter(parts.values())) if len(parts) == 1
                    else max(parts.values(), key=lambda p: p.nbytes))
            if part.front is not None and part.front is not keep:
                self._drop_front(part)
                self.evicted_for_bytes += 1
                continue
            if len(part.groups) > 1:  # keep is the oldest: the next one goes
                victim = next(itertools.islice(part.groups, 1, None))
                group = part.groups.pop(victim)
                part.nbytes -= group.nbytes
                self._bytes -= group.nbytes
                self._group_total -= 1
                self.evicted_for_bytes += 1
                continue
            live = [dq for dq in keep if dq]
            if part.front is not keep or not live:
                return
            oldest = min(live, key=lambda dq: dq[0][0])
            self._pop_oldest(part, keep, oldest)
            self.dropped_for_bytes += 1

    def _expire(self, part: _Partition, ts: float) -> Sequence[Firing]:
        """Drop the partition's groups, oldest first, whose newest match is older than
        the window; for lt/lte, decide each of them."""
        horizon = ts - self._span
        front = part.front
        if not self._closing:  # nothing to evaluate: drop the expired prefix
            while front is not None and front.last_ts < horizon:
                self._drop_front(part)
                front = part.front
            return _NO_FIRINGS
        firings: list[Firing] = []
        while front is not None and front.last_ts < horizon:
            group = self._drop_front(part)
            fired = self._evaluate(group, 0, closing=True)
            if fired is not None:
                firings.append(fired)
            front = part.front
        return firings

    def _evaluate(self, group: _Group, slot: int, *, closing: bool) -> Firing | None:
        rule = self.rule
        if (rule.op in ("lt", "lte")) != closing:
            return None
        # The measure first: copying the matches is only worth it when the group fires.
        if rule.type is CorrelationType.EVENT_COUNT:
            measure = float(len(group[0]))
            if not measure or not self._check(measure, rule.count):
                return None
            chosen = list(group[0])
        elif rule.type is CorrelationType.VALUE_COUNT:
            entries = group[0]
            measure = float(len(group.values))
            if not entries or not self._check(measure, rule.count):
                return None
            chosen = list(entries)
        elif rule.type is CorrelationType.TEMPORAL:
            measure = float(sum(1 for dq in group if dq))
            if not measure or not self._check(measure, rule.count):
                return None
            chosen = [m for dq in group for m in dq]
        else:
            if slot != self._slots - 1:
                return None
            chain = self._ordered_chain(group)
            if chain is None:
                return None
            chosen = chain
            measure = float(len(chain))
        if not chosen or not self._check(measure, rule.count):
            return None
        chosen.sort(key=_entry_ts)
        ids = dict.fromkeys(i for m in chosen for i in m[1])  # first seen, in order
        return Firing(tuple(ids), chosen[-1][2], chosen[-1][0])

    def _ordered_chain(self, group: _Group) -> list[_Entry] | None:
        """Latest matches of refs 0..n-1 in order, all within the timespan."""
        chain: list[_Entry] = []
        bound = float("inf")
        for dq in reversed(group):
            candidates = [m for m in dq if m[0] <= bound]
            if not candidates:
                return None
            pick = candidates[-1]
            chain.append(pick)
            bound = pick[0]
        chain.reverse()
        if chain[-1][0] - chain[0][0] > self.rule.timespan:
            return None
        return chain

    def stats(self) -> dict[str, int]:
        return {"groups": self.group_count, "evicted_groups": self.evicted_groups,
                "dropped_matches": self.dropped_matches, "bytes": self._bytes,
                "evicted_for_bytes": self.evicted_for_bytes,
                "dropped_for_bytes": self.dropped_for_bytes, "senders": len(self._parts)}


def _forget(values: dict[Any, int], entry: _Entry) -> None:
    """One entry fewer holding ``entry``'s value."""
    n = values[entry[3]] - 1
    if n:
        values[entry[3]] = n
    else:
        del values[entry[3]]


def _entry_ts(entry: _Entry) -> float:
    return entry[0]
