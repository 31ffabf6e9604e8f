"""The indexed dispatch (dispatch.py) against the reference matcher (codegen.build_matcher).

Differential: every SigmaHQ rule in shared/data/sigma (linux and web) and every shipped
rule, on seeded events written from the rules' own literals with case changes and near
misses (rule_events.py), and on the shipped rules' own test events: both matchers must
give the same rules for each event, in the same order.
"""

from __future__ import annotations

import functools
import os
import random
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from collector.detection import DetectionEngine, load_rules
from collector.detection.codegen import build_matcher
from collector.detection.dispatch import anchors, build_dispatch, required_literals
from collector.detection.rules import DetectionRule
from collector.detection.testcases import case_events
from tests.collector.detection.detection_helpers import load_text
from tests.collector.detection.rule_events import events_for, process_event
from tests.harness import REPO, SHARED

SIGMA = SHARED / "data/sigma"


@functools.cache
def _loaded(paths: tuple[Path, ...]) -> tuple[DetectionRule, ...]:
    return tuple(load_rules(paths).detections)


def _rules(paths: Sequence[Path]) -> list[DetectionRule]:
    """The rules of these directories, loaded once for the module."""
    for path in paths:
        if not path.is_dir():
            message = f"rules not found at {path}"
            if os.environ.get("CI") == "true":
                pytest.fail(message)
            pytest.skip(f"NOT TESTED: {message}")
    return list(_loaded(tuple(paths)))


ALL = (SIGMA / "linux", SIGMA / "web", REPO / "rules")


def _ids(found: tuple[list[DetectionRule], list[DetectionRule]]) -> list[str]:
    return [r.meta.id for r in found[0]]


def _disagreements(rules: Sequence[DetectionRule], docs: Sequence[Mapping[str, Any]]
                   ) -> tuple[int, list[str]]:
    reference, fast = build_matcher(rules), build_dispatch(rules)
    matches = 0
    wrong: list[str] = []
    for doc in docs:
        want, got = _ids(reference(doc)), _ids(fast(doc))
        matches += len(want)
        if want != got:
            wrong.append(f"{doc}: reference {want}, dispatch {got}")
    return matches, wrong


def _variants(rnd: random.Random, n: int) -> dict[str, Any]:
    """A process event, sometimes with arrays, dotted keys or absent fields."""
    doc = process_event(rnd, n)
    roll = rnd.random()
    if roll < 0.05:
        doc["process"]["command_line"] = [doc["process"]["command_line"], "/bin/sh -c id"]
    elif roll < 0.1:
        doc["process.executable"] = doc["process"].pop("executable")
    elif roll < 0.15:
        del doc["process"]
    return doc


def test_sigmahq_and_shipped_rules_agree_on_generated_events() -> None:
    rules = _rules(ALL)
    assert len(rules) > 200
    docs = events_for(rules, 4000, seed=14, from_rules=0.8, base=_variants)
    matches, wrong = _disagreements(rules, docs)
    assert not wrong, "\n".join(wrong[:5])
    assert matches > 1000, "the generated events should hit many rules"


def test_each_category_alone_agrees() -> None:
    """Per log source, as the engine builds them (other anchors, fewer rules)."""
    by_source: dict[Any, list[DetectionRule]] = {}
    for rule in _rules(ALL):
        by_source.setdefault(rule.keys, []).append(rule)
    assert len(by_source) > 5
    for keys, rules in by_source.items():
        docs = events_for(rules, 400, seed=len(rules), from_rules=0.7)
        _, wrong = _disagreements(rules, docs)
        assert not wrong, (keys, wrong[:3])


def test_shipped_rules_test_cases_agree() -> None:
    rules = [r for r in _rules(ALL) if r.path.startswith(str(REPO / "rules"))]
    docs = [event for rule in rules for case in rule.tests for event in case_events(case)]
    assert docs
    matches, wrong = _disagreements(rules, docs)
    assert not wrong, "\n".join(wrong[:5])
    assert matches > 0


def test_almost_every_process_rule_has_an_anchor() -> None:
    rules = [r for r in _rules(ALL) if "/process_creation/" in r.path]
    assert len(rules) > 100
    unanchored = [r.meta.title for r in rules if anchors(r.condition) is None]  # type: ignore[arg-type]
    assert not unanchored, unanchored


@pytest.mark.parametrize(("source", "literals"), [
    (r"-(W|R)\s?(\s|\"|')([0-9a-fA-F]{2}\s?){2,20}", {"-W", "-R"}),
    ("x(foo|bar)y", {"xfooy", "xbary"}),
    ("[ab]c", {"ac", "bc"}),
    ("ab?cd", {"cd"}),
    ("^abc$", {"abc"}),
    ("abc(?i:d)", {"abc"}),
    ("(?i)abc", None),  # case ignored: the literal may be in any case
    ("a|b.*", None),
    (r"\d+", None),
    (r"\Qa.b\E", None),  # RE2 only: Python's parser refuses it, so nothing is known
])
def test_required_literals(source: str, literals: set[str] | None) -> None:
    assert required_literals(source) == literals


RULES = """
title: Either field
id: d0000000-0000-0000-0000-000000000001
logsource: {product: linux, category: process_creation}
detection:
  image: {Image|endswith: [/nc, /ncat]}
  cmd: {CommandLine|contains: ['/dev/tcp/', ' -e /bin/sh']}
  condition: image or cmd
---
title: Prefix and suffix of several lengths
id: d0000000-0000-0000-0000-000000000002
logsource: {product: linux, category: process_creation}
detection:
  sel:
    CommandLine|startswith: [curl , 'wget -q']
    Image|endswith: [bin/curl, wget, /usr/bin/wget2]
  condition: sel
---
title: Unanchored regex
id: d0000000-0000-0000-0000-000000000003
logsource: {product: linux, category: process_creation}
detection:
  sel: {CommandLine|re: 'x{3}'}
  condition: sel
"""


@pytest.mark.parametrize(("process", "titles"), [
    ({"executable": "/usr/bin/NC", "command_line": "nc"}, ["Either field"]),
    ({"executable": "/bin/true", "command_line": "bash -c 'cat </dev/tcp/1.2.3.4/80'"},
     ["Either field"]),
    ({"executable": "/usr/bin/wget", "command_line": "WGET -q http://x"},
     ["Prefix and suffix of several lengths"]),
    ({"executable": "/usr/bin/wget2", "command_line": "wget -q http://x xxx"},
     ["Prefix and suffix of several lengths", "Unanchored regex"]),
    ({"executable": "/usr/bin/wget", "command_line": " wget -q http://x"}, []),
    ({"executable": ["/usr/bin/nc", "/bin/sh"], "command_line": "id"}, ["Either field"]),
    ({"command_line": "id"}, []),
])
def test_engine_matches_through_the_index(tmp_path: Path, process: dict[str, Any],
                                          titles: list[str]) -> None:
    engine = DetectionEngine(load_text(tmp_path, RULES))
    event = {"event": {"id": "e1", "dataset": "sisguard.process", "type": ["start"]},
             "process": process}
    assert [a["rule"]["name"] for a in engine.process(event)] == titles
