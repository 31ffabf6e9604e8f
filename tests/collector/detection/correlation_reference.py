"""The correlation state as it was before the feed was made cheaper (commit bf6aeba).

Kept for the differential test (test_correlation_state.py): the current state must give
the same firings and counters as this one on any stream of matches. Do not optimise.
"""

from __future__ import annotations

import threading
from collections import OrderedDict, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

from collector.detection.getters import field_getter, key_getter
from collector.detection.matcher import as_text, lookup
from collector.detection.rules import CorrelationRule, CorrelationType

DEFAULT_MAX_GROUPS = 10_000
DEFAULT_MAX_EVENTS = 1_000

_OPS: dict[str, Callable[[float, float], bool]] = {
    "gt": lambda a, b: a > b, "gte": lambda a, b: a >= b,
    "lt": lambda a, b: a < b, "lte": lambda a, b: a <= b,
    "eq": lambda a, b: a == b,
}


class Match(NamedTuple):
    """A rule match (or a fired correlation) fed to a correlation."""

    ts: float
    event_ids: tuple[str, ...]
    doc: Mapping[str, Any]
    value: str | None = None  # value_count: the value of the counted field


_new_match = tuple.__new__  # Match(...) without the Python-level __new__ of NamedTuple


@dataclass(frozen=True)
class Firing:
    event_ids: tuple[str, ...]
    last: Mapping[str, Any]
    ts: float


class _Group:
    __slots__ = ("entries", "last_ts")

    def __init__(self, last_ts: float, entries: list[deque[Match]]) -> None:
        self.last_ts = last_ts
        # one deque per reference for temporal types; index 0 only for the count types
        self.entries = entries


def _key_part(value: Any) -> Any:
    if value.__class__ is str:
        return value
    if isinstance(value, list):
        return tuple(as_text(v) for v in value)
    return as_text(value)


class CorrelationState:
    def __init__(self, rule: CorrelationRule, *, max_groups: int = DEFAULT_MAX_GROUPS,
                 max_events: int = DEFAULT_MAX_EVENTS) -> None:
        self.rule = rule
        self.max_groups = max_groups
        self.max_events = max_events
        self._lock = threading.Lock()
        self._groups: OrderedDict[tuple[Any, ...], _Group] = OrderedDict()
        self._watermark = float("-inf")
        self._check = _OPS[rule.op]
        self._closing = rule.op in ("lt", "lte")  # decided when a window closes
        self._counting = rule.type is CorrelationType.EVENT_COUNT
        self._slots = (len(rule.references)
                       if rule.type in (CorrelationType.TEMPORAL, CorrelationType.TEMPORAL_ORDERED)
                       else 1)
        self.evicted_groups = 0
        self.dropped_matches = 0
        self._link(rule)

    def _link(self, rule: CorrelationRule) -> None:
        self._group_keys = {ref: key_getter(paths, _key_part)
                            for ref, paths in rule.group_paths.items()}
        self._value_getters = {ref: field_getter(path)
                               for ref, path in rule.value_paths.items()}

    def relink(self, rule: CorrelationRule) -> None:
        """Same definition, new rule object (after a reload)."""
        self.rule = rule
        self._link(rule)

    @property
    def group_count(self) -> int:
        return len(self._groups)

    def group_key(self, ref: str, doc: Mapping[str, Any]) -> tuple[Any, ...]:
        key = self._group_keys.get(ref)
        if key is None:  # not linked (no group-by for this reference)
            return tuple(_key_part(lookup(doc, p)) for p in self.rule.group_paths.get(ref, ()))
        return key(doc)

    def feed(self, ref: str, doc: Mapping[str, Any], ts: float,
             event_ids: tuple[str, ...]) -> list[Firing]:
        rule = self.rule
        value = None
        if rule.type is CorrelationType.VALUE_COUNT:
            getter = self._value_getters.get(ref)
            value = as_text(getter(doc) if getter is not None
                            else lookup(doc, rule.value_paths.get(ref, "")))
            if value is None:
                return []
        slot = rule.references.index(ref) if self._slots > 1 else 0
        make_key = self._group_keys.get(ref)
        key = make_key(doc) if make_key is not None else self.group_key(ref, doc)
        match = _new_match(Match, (ts, event_ids, doc, value))
        with self._lock:
            firings = self._expire(ts) if ts > self._watermark else []
            groups = self._groups
            group = groups.get(key)
            if group is None:
                if len(groups) >= self.max_groups:
                    self._evict()
                group = groups[key] = _Group(
                    ts, [deque()] if self._slots == 1 else [deque() for _ in range(self._slots)])
                fresh = True
            else:
                groups.move_to_end(key)
                group.last_ts = max(group.last_ts, ts)
                fresh = False
            entries = group.entries[slot]
            entries.append(match)
            if len(entries) > self.max_events:
                entries.popleft()
                self.dropped_matches += 1
            if not fresh:  # a new group holds just this match, inside its window
                self._prune(group, ts)
            if self._closing:  # lt/lte: decided when the window closes (_expire)
                return firings
            if self._counting and not self._check(float(len(entries)), rule.count):
                return firings  # the common case, without _evaluate's copies
            fired = self._evaluate(group, slot, closing=False)
            if fired is not None:
                firings.append(fired)
                for dq in group.entries:
                    dq.clear()
        return firings

    def _evict(self) -> None:
        while len(self._groups) >= self.max_groups:
            self._groups.popitem(last=False)
            self.evicted_groups += 1

    def _prune(self, group: _Group, now: float) -> None:
        horizon = now - self.rule.timespan
        for dq in group.entries:
            while dq and dq[0].ts < horizon:
                dq.popleft()

    def _expire(self, ts: float) -> list[Firing]:
        firings: list[Firing] = []
        if ts <= self._watermark:
            return firings
        self._watermark = ts
        horizon = ts - self.rule.timespan
        expired: list[tuple[tuple[Any, ...], _Group]] = []
        for key, group in self._groups.items():  # oldest first
            if group.last_ts >= horizon:
                break
            expired.append((key, group))
        for key, group in expired:
            del self._groups[key]
            if self._closing:
                fired = self._evaluate(group, 0, closing=True)
                if fired is not None:
                    firings.append(fired)
        return firings

    def _evaluate(self, group: _Group, slot: int, *, closing: bool) -> Firing | None:
        rule = self.rule
        if (rule.op in ("lt", "lte")) != closing:
            return None
        # The measure first: copying the matches is only worth it when the group fires.
        if rule.type is CorrelationType.EVENT_COUNT:
            measure = float(len(group.entries[0]))
            if not measure or not self._check(measure, rule.count):
                return None
            chosen = list(group.entries[0])
        elif rule.type is CorrelationType.VALUE_COUNT:
            entries = group.entries[0]
            measure = float(len({m.value for m in entries}))
            if not entries or not self._check(measure, rule.count):
                return None
            chosen = list(entries)
        elif rule.type is CorrelationType.TEMPORAL:
            measure = float(sum(1 for dq in group.entries if dq))
            if not measure or not self._check(measure, rule.count):
                return None
            chosen = [m for dq in group.entries for m in dq]
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
        chosen.sort(key=lambda m: m.ts)
        ids = dict.fromkeys(i for m in chosen for i in m.event_ids)  # first seen, in order
        return Firing(tuple(ids), chosen[-1].doc, chosen[-1].ts)

    def _ordered_chain(self, group: _Group) -> list[Match] | None:
        """Latest matches of refs 0..n-1 in order, all within the timespan."""
        chain: list[Match] = []
        bound = float("inf")
        for dq in reversed(group.entries):
            candidates = [m for m in dq if m.ts <= bound]
            if not candidates:
                return None
            pick = candidates[-1]
            chain.append(pick)
            bound = pick.ts
        chain.reverse()
        if chain[-1].ts - chain[0].ts > self.rule.timespan:
            return None
        return chain

    def stats(self) -> dict[str, int]:
        return {"groups": self.group_count, "evicted_groups": self.evicted_groups,
                "dropped_matches": self.dropped_matches}
