"""The condition grammar: and, or, not, parentheses, 1 of / all of."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.collector.detection.detection_helpers import engine_for, proc, rule

DETECTIONS = """
sel_a:
    CommandLine|contains: 'alpha'
sel_b:
    CommandLine|contains: 'beta'
filter_c:
    CommandLine|contains: 'gamma'
"""


@pytest.mark.parametrize(("condition", "matching", "not_matching"), [
    ("sel_a and sel_b", "alpha beta", "alpha"),
    ("sel_a or sel_b", "beta", "gamma"),
    ("sel_a and not filter_c", "alpha", "alpha gamma"),
    ("not (sel_a or sel_b)", "gamma", "alpha"),
    ("(sel_a or sel_b) and not filter_c", "beta", "beta gamma"),
    ("1 of sel_*", "beta", "gamma"),
    ("all of sel_*", "alpha beta", "alpha gamma"),
    ("1 of them", "gamma", "delta"),
    ("all of them", "alpha beta gamma", "alpha beta"),
    ("sel_a or sel_b and filter_c", "alpha", "beta"),  # and binds tighter than or
])
def test_condition(tmp_path: Path, condition: str, matching: str, not_matching: str) -> None:
    engine = engine_for(tmp_path, rule(DETECTIONS + f"condition: {condition}"))
    assert engine.process(proc(matching)), condition
    assert not engine.process(proc(not_matching)), condition


def test_several_conditions_are_alternatives(tmp_path: Path) -> None:
    engine = engine_for(tmp_path, rule(DETECTIONS + "condition:\n    - sel_a\n    - sel_b"))
    assert engine.process(proc("beta"))
    assert not engine.process(proc("gamma"))


def test_mapping_items_and_list_of_mappings(tmp_path: Path) -> None:
    det = """
    sel:
        - CommandLine|contains: 'alpha'
          Image|endswith: '/sh'
        - CommandLine|contains: 'beta'
    condition: sel
    """
    engine = engine_for(tmp_path, rule(det))
    assert engine.process(proc("alpha", "/bin/sh"))
    assert not engine.process(proc("alpha", "/bin/bash"))
    assert engine.process(proc("beta", "/bin/bash"))
