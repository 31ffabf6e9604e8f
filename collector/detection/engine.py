"""The detection engine: an immutable rule snapshot, swapped atomically on reload.

``process(event)`` classifies the event once (logsources.py, cached by the few fields
that decide it), runs the generated function (dispatch.py: an index of the rules'
literals, then only the candidate rules; codegen.py's matcher is the reference and the
fallback) for the rules indexed under the log sources it satisfies, feeds matches to
correlations and returns alert documents. It never raises: a rule or event that fails
is counted and logged.
Several threads may call ``process`` at once: the snapshot is read-only, correlation
state has its own locks, counters a lock of their own.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from collector.detection.alerts import build_alert, event_id_of
from collector.detection.clock import EventClock, event_time
from collector.detection.codegen import MatchFn, build_matcher, closure_matcher
from collector.detection.correlation import (
    DEFAULT_MAX_BYTES,
    DEFAULT_MAX_EVENTS,
    DEFAULT_MAX_GROUPS,
    CorrelationState,
    Firing,
)
from collector.detection.dispatch import build_dispatch
from collector.detection.getters import KeyFunction
from collector.detection.loader import load_rules
from collector.detection.logsources import (
    EventKind,
    LogsourceKey,
    event_kind,
    kind_key,
    satisfied_keys,
)
from collector.detection.patterns import capped_texts
from collector.detection.rules import (
    REVISION,
    CorrelationRule,
    DetectionRule,
    LoadResult,
    Rule,
)
from collector.detection.state_size import Slimmer, kept_paths
from common.logs import get_logger

log = get_logger("sisguard.collector.detection")

_KIND_CACHE_LIMIT = 4096
_MAX_CHAIN = 16

__all__ = ["DetectionEngine", "event_time"]


@dataclass(frozen=True)
class _Candidates:
    """The rules an event kind may trigger, and the generated function that tries them."""

    rules: tuple[DetectionRule, ...]
    match: MatchFn


def _matcher_for(rules: tuple[DetectionRule, ...]) -> MatchFn:
    try:
        return build_dispatch(rules)
    except Exception:  # a generator bug must not stop detection: fall back
        log.exception("detection: indexed dispatch failed; using the generated matcher")
    try:
        return build_matcher(rules)
    except Exception:
        log.exception("detection: code generation failed; using the rules' closures")
        return closure_matcher(rules)


@dataclass
class _Snapshot:
    result: LoadResult
    index: dict[LogsourceKey, list[DetectionRule]]
    correlations: dict[str, CorrelationState]  # by correlation rule id
    # id(rule) -> (state, ref, the group key function of ref's matches in that state)
    consumers: dict[int, list[tuple[CorrelationState, str, KeyFunction | None]]]
    slim: Slimmer  # what correlation state keeps of an event, and its size
    kinds: dict[Hashable, _Candidates] = field(default_factory=dict)  # by kind_key()
    by_keys: dict[tuple[LogsourceKey, ...], _Candidates] = field(default_factory=dict)
    revision: int = field(default_factory=lambda: REVISION[0])

    def refresh(self) -> None:
        """A rule's match was replaced: forget the code generated before."""
        self.revision = REVISION[0]
        self.kinds.clear()
        self.by_keys.clear()

    def candidates(self, event: Mapping[str, Any]) -> _Candidates:
        key = kind_key(event)
        if key is not None:
            try:
                return self.kinds[key]
            except KeyError:
                pass
            except TypeError:  # an unhashable event.dataset, say
                key = None
        found = self.rules_for(event_kind(event))
        if key is not None:
            if len(self.kinds) >= _KIND_CACHE_LIMIT:
                self.kinds.clear()
            self.kinds[key] = found
        return found

    def rules_for(self, kind: EventKind) -> _Candidates:
        keys = satisfied_keys(kind)
        found = self.by_keys.get(keys)
        if found is None:
            seen: dict[int, DetectionRule] = {}
            for key in keys:
                for rule in self.index.get(key, ()):
                    seen.setdefault(id(rule), rule)
            rules = tuple(seen.values())
            found = self.by_keys[keys] = _Candidates(rules, _matcher_for(rules))
        return found


def _state_key(rule: CorrelationRule) -> tuple[str, str]:
    return (rule.meta.id, rule.fingerprint)


class DetectionEngine:
    def __init__(self, result: LoadResult, *, max_groups: int = DEFAULT_MAX_GROUPS,
                 max_events: int = DEFAULT_MAX_EVENTS, max_state_bytes: int = DEFAULT_MAX_BYTES,
                 clock: EventClock | None = None) -> None:
        self._max_groups = max_groups
        self._max_events = max_events
        self._max_state_bytes = max_state_bytes  # shared equally by the correlations
        self.clock = clock if clock is not None else EventClock()
        self._stats_lock = threading.Lock()
        self._swap_lock = threading.Lock()
        self._events = itertools.count(1)
        self._alerts = 0
        self._errors = 0
        self._per_rule: dict[str, dict[str, Any]] = {}
        self._snapshot = self._build(result, {})

    @classmethod
    def from_paths(cls, paths: Sequence[Path], *, filters: Sequence[Path] = ()
                   ) -> DetectionEngine:
        return cls(load_rules(paths, filters=filters))

    @property
    def result(self) -> LoadResult:
        return self._snapshot.result

    def _build(self, result: LoadResult, old: Mapping[tuple[str, str], CorrelationState]
               ) -> _Snapshot:
        index: dict[LogsourceKey, list[DetectionRule]] = {}
        for detection in result.detections:
            for key in detection.keys:
                index.setdefault(key, []).append(detection)
        states: dict[str, CorrelationState] = {}
        share = self._max_state_bytes // max(1, len(result.correlations))
        for corr in result.correlations:
            state = old.get(_state_key(corr))
            if state is None:
                state = CorrelationState(corr, max_groups=self._max_groups,
                                         max_events=self._max_events, max_bytes=share)
            else:
                state.relink(corr)
                state.max_bytes = share
            states[corr.meta.id] = state
        by_ref: dict[str, Rule] = {}
        for rule in result.rules:
            by_ref[rule.meta.id] = rule
            if rule.meta.name:
                by_ref.setdefault(rule.meta.name, rule)
        consumers: dict[int, list[tuple[CorrelationState, str, KeyFunction | None]]] = {}
        for corr in result.correlations:
            for ref in corr.references:
                target = by_ref.get(ref)
                if target is not None:
                    state = states[corr.meta.id]
                    consumers.setdefault(id(target), []).append(
                        (state, ref, state.key_function(ref)))
        needed = [p for corr in result.correlations
                  for paths in (*corr.group_paths.values(), tuple(corr.value_paths.values()))
                  for p in paths]
        return _Snapshot(result, index, states, consumers, Slimmer(kept_paths(needed)))

    def replace(self, result: LoadResult) -> None:
        """Swap in new rules; correlation state survives where a rule is unchanged."""
        with self._swap_lock:
            old = {_state_key(s.rule): s for s in self._snapshot.correlations.values()}
            self._snapshot = self._build(result, old)

    def process(self, event: Mapping[str, Any]) -> list[dict[str, Any]]:
        next(self._events)
        snap = self._snapshot
        if snap.revision != REVISION[0]:
            snap.refresh()
        try:
            ts, skew_alert = self.clock.judge(event)  # flags the event: before the rules
            matched, failed = snap.candidates(event).match(event)
        except Exception:  # a malformed event must not stop the stream
            log.exception("detection: cannot classify event")
            self._count(errors=1)
            return []
        alerts: list[dict[str, Any]] = []
        if skew_alert is not None:
            alerts.append(skew_alert)
        fired: list[CorrelationRule] = []
        if matched:
            try:
                self._on_matches(snap, event, ts, matched, alerts, fired)
            except Exception:
                log.exception("detection: correlation failed")
                self._count(errors=1)
        if matched or failed or alerts:
            self._count(matched=matched, fired=fired, failed=failed, alerts=len(alerts))
        return alerts

    def matches(self, event: Mapping[str, Any]) -> list[DetectionRule]:
        """The detection rules the event matches, in rule order, and nothing else: no
        alerts, no correlation, no counters (evaluation only: benchmarks, tools)."""
        snap = self._snapshot
        if snap.revision != REVISION[0]:
            snap.refresh()
        return snap.candidates(event).match(event)[0]

    def _on_matches(self, snap: _Snapshot, event: Mapping[str, Any], ts: float | None,
                    matched: list[DetectionRule], alerts: list[dict[str, Any]],
                    fired: list[CorrelationRule]) -> None:
        ids = (event_id_of(event),)
        kept: dict[str, Any] | None = None
        size = 0
        for rule in matched:
            if rule.generate:
                alerts.append(build_alert(rule.meta, event, ids))
            consumers = snap.consumers.get(id(rule))
            if not consumers:
                continue
            if kept is None:  # what every correlation keeps of this event, made once
                kept, size = snap.slim(event)
                if ts is None:
                    ts = self.clock.state_time(event)
            assert ts is not None
            shared: KeyFunction | None = None
            key = None  # correlations grouping alike (same paths) share the group key
            for state, ref, make_key in consumers:
                if make_key is not shared:
                    shared = make_key
                    key = make_key(event) if make_key is not None else None
                for firing in state.feed(ref, kept, ts, ids, key, size):  # usually none
                    self._fire(snap, state.rule, firing, alerts, fired, 0)

    def _feed(self, snap: _Snapshot, state: CorrelationState, ref: str,
              doc: Mapping[str, Any], ts: float, ids: tuple[str, ...],
              alerts: list[dict[str, Any]], fired: list[CorrelationRule], depth: int) -> None:
        if depth > _MAX_CHAIN:
            return
        for firing in state.feed(ref, doc, ts, ids):
            self._fire(snap, state.rule, firing, alerts, fired, depth)

    def _fire(self, snap: _Snapshot, rule: CorrelationRule, firing: Firing,
              alerts: list[dict[str, Any]], fired: list[CorrelationRule], depth: int) -> None:
        fired.append(rule)
        paths = sorted({p for refs in rule.group_paths.values() for p in refs})
        alerts.append(build_alert(rule.meta, firing.last, firing.event_ids,
                                  correlation=rule.type.value, group_paths=paths))
        for state, ref, _ in snap.consumers.get(id(rule), ()):
            self._feed(snap, state, ref, firing.last, firing.ts, firing.event_ids,
                       alerts, fired, depth + 1)

    def _rule_stats(self, rule: Rule) -> dict[str, Any]:
        entry = self._per_rule.get(rule.meta.id)
        if entry is None:
            entry = self._per_rule[rule.meta.id] = {"title": rule.meta.title, "matches": 0,
                                                    "errors": 0}
        return entry

    def _count(self, *, matched: Sequence[Rule] = (), fired: Sequence[Rule] = (),
               failed: Sequence[Rule] = (), alerts: int = 0, errors: int = 0) -> None:
        per_rule = self._per_rule
        with self._stats_lock:
            self._alerts += alerts
            self._errors += errors + len(failed)
            for rules in (matched, fired):
                for rule in rules:
                    entry = per_rule.get(rule.meta.id)
                    if entry is None:
                        entry = self._rule_stats(rule)
                    entry["matches"] += 1
            for rule in failed:
                self._rule_stats(rule)["errors"] += 1

    def stats(self) -> dict[str, Any]:
        """Counters: events, alerts, errors, per-rule matches/errors, correlation state."""
        snap = self._snapshot
        # The count's next value, read without consuming it (next() is atomic, += is not).
        events = int(self._events.__reduce__()[1][0]) - 1
        with self._stats_lock:
            return {
                "events": events,
                "alerts": self._alerts,
                "errors": self._errors,
                "rules_loaded": len(snap.result.rules),
                "rules": {k: dict(v) for k, v in self._per_rule.items()},
                "correlations": {k: s.stats() for k, s in snap.correlations.items()},
                "state_bytes": sum(s.state_bytes for s in snap.correlations.values()),
                "max_state_bytes": self._max_state_bytes,
                "pattern_texts_capped": capped_texts(),
                **self.clock.stats(),
            }
