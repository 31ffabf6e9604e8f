"""Rule test cases: the ``tests:`` key of a rule document, and running them.

```yaml
tests:
  - name: php file dropped in web root
    event: {event: {dataset: sisguard.fim, action: created}, file: {path: /var/www/x.php}}
    alerts: 1
  - name: ssh brute force
    events: [{...}, {...}]    # fed in order
    alerts: 1
```
``alerts`` counts the alerts (matches) of the rule the ``tests:`` key sits in; for a
correlation document, that correlation's alerts. Events without ``@timestamp`` get one,
1 s apart from 2026-01-01T00:00:00Z; events without ``event.id`` get one. Dotted keys
(``event.dataset: sisguard.fim``) are expanded into nested objects.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from collector.detection.documents import Document
from collector.detection.rules import LoadResult, Rule, RuleLoadError, TestCase
from common.errors import Location
from common.yamlconf import PositionedDict

TEST_EPOCH = datetime(2026, 1, 1, tzinfo=UTC)


def _where(doc: Document, node: Any, key: str | None = None) -> Location:
    if isinstance(node, PositionedDict):
        pos = node.positions.get(key) if key else node.start
        if pos:
            return Location(doc.path, pos[0], pos[1])
    return doc.at("tests")


def parse_tests(doc: Document, errors: list[RuleLoadError]) -> tuple[TestCase, ...]:
    raw = doc.data.get("tests")
    if raw is None:
        return ()
    if not isinstance(raw, list):
        errors.append(RuleLoadError(doc.at("tests"), "tests: expected a list of test cases"))
        return ()
    cases: list[TestCase] = []
    for number, item in enumerate(raw, 1):
        where = _where(doc, item)
        if not isinstance(item, dict):
            errors.append(RuleLoadError(where, f"tests[{number}]: expected a mapping"))
            continue
        unknown = sorted(set(item) - {"name", "event", "events", "alerts"})
        if unknown:
            errors.append(RuleLoadError(_where(doc, item, unknown[0]),
                                        f"tests[{number}]: unknown key '{unknown[0]}' "
                                        "(known: name, event, events, alerts)"))
            continue
        name = item.get("name")
        if not isinstance(name, str) or not name:
            errors.append(RuleLoadError(where, f"tests[{number}]: 'name' is required"))
            continue
        if ("event" in item) == ("events" in item):
            errors.append(RuleLoadError(where, f"test '{name}': give exactly one of "
                                               "'event' or 'events'"))
            continue
        events = [item["event"]] if "event" in item else item["events"]
        if not isinstance(events, list) or not all(isinstance(e, dict) for e in events):
            errors.append(RuleLoadError(where, f"test '{name}': events must be mappings"))
            continue
        alerts = item.get("alerts")
        if isinstance(alerts, bool) or not isinstance(alerts, int) or alerts < 0:
            errors.append(RuleLoadError(_where(doc, item, "alerts") if "alerts" in item
                                        else where,
                                        f"test '{name}': 'alerts' must be a number >= 0"))
            continue
        cases.append(TestCase(name, tuple(events), alerts, where))
    return tuple(cases)


def expand_dotted(doc: Mapping[str, Any]) -> dict[str, Any]:
    """{'event.dataset': x} -> {'event': {'dataset': x}} (recursively)."""
    out: dict[str, Any] = {}
    for key, value in doc.items():
        if isinstance(value, Mapping):
            value = expand_dotted(value)
        parts = str(key).split(".")
        node = out
        for part in parts[:-1]:
            child = node.get(part)
            if not isinstance(child, dict):
                child = node[part] = {}
            node = child
        last = parts[-1]
        if isinstance(value, dict) and isinstance(node.get(last), dict):
            node[last].update(value)
        else:
            node[last] = value
    return out


def case_events(case: TestCase) -> list[dict[str, Any]]:
    """The case's events with @timestamp and event.id filled in."""
    events = []
    for i, raw in enumerate(case.events):
        event = expand_dotted(copy.deepcopy(dict(raw)))
        if "@timestamp" not in event:
            stamp = TEST_EPOCH + timedelta(seconds=i)
            event["@timestamp"] = stamp.isoformat().replace("+00:00", "Z")
        meta = event.setdefault("event", {})
        if isinstance(meta, dict):
            meta.setdefault("id", f"test-{i + 1}")
        events.append(event)
    return events


@dataclass(frozen=True)
class CaseResult:
    rule: Rule
    case: TestCase
    actual: int
    events: tuple[dict[str, Any], ...]
    alerts: tuple[dict[str, Any], ...]

    @property
    def passed(self) -> bool:
        return self.actual == self.case.alerts


EngineFactory = Callable[[LoadResult], Any]


def run_tests(result: LoadResult, make_engine: EngineFactory) -> list[CaseResult]:
    """Run every test case of every rule, each case on a fresh engine."""
    outcomes: list[CaseResult] = []
    for rule in result.rules:
        for case in rule.tests:
            engine = make_engine(result)
            events = case_events(case)
            alerts: list[dict[str, Any]] = []
            for event in events:
                alerts.extend(engine.process(event))
            actual = int(engine.stats()["rules"].get(rule.meta.id, {}).get("matches", 0))
            mine = tuple(a for a in alerts if a.get("rule", {}).get("id") == rule.meta.id)
            outcomes.append(CaseResult(rule, case, actual, tuple(events), mine))
    return outcomes
