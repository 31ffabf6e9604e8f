"""Rule wildcards and regexes run on RE2 (linear by construction) over a capped text."""

from __future__ import annotations

from pathlib import Path

import pytest

from collector.detection import patterns
from collector.detection.modifiers import Kind, Pattern, pattern_set
from collector.detection.patterns import LinearPattern, NotLinear, capped_texts
from tests.collector.detection.detection_helpers import engine_for, load_text, proc, rule

SLOW_WILDCARD = rule("sel:\n    CommandLine: '*a*a*a*b'\ncondition: sel")
CATASTROPHIC = rule("sel:\n    CommandLine|re: '^(a+)+$'\ncondition: sel")


def test_multi_star_wildcards_and_regexes_compile_to_re2() -> None:
    ps = pattern_set([Pattern(Kind.WILDCARD, ".*a.*a.*a.*b", False, "a"),
                      Pattern(Kind.REGEX, "^(a+)+$", True)])
    assert isinstance(ps.wildcard, LinearPattern)
    assert all(isinstance(r, LinearPattern) for r in ps.regexes)
    # linear by construction: RE2 compiles to an automaton whose size depends on the
    # pattern only (this one: a few dozen instructions), never on the text
    assert ps.wildcard._rx.ProgramSize() < 100


@pytest.mark.timeout(60)
def test_the_backtracking_attacks_finish_and_answer_right(tmp_path: Path) -> None:
    """'*a*a*a*b' on an 800-character line took 19 s with Python's re; '^(a+)+$' on
    'aaa...!' is exponential there. With RE2 each is one pass."""
    for text, attack in ((SLOW_WILDCARD, "a" * 800), (CATASTROPHIC, "a" * 5000 + "!")):
        engine = engine_for(tmp_path, text)
        assert engine.process(proc(command_line=attack)) == []
        assert engine.stats()["errors"] == 0
    assert len(engine_for(tmp_path, SLOW_WILDCARD).process(proc(command_line="xaxaxab"))) == 1
    assert len(engine_for(tmp_path, CATASTROPHIC).process(proc(command_line="aaaa"))) == 1


def test_texts_longer_than_the_cap_are_cut_and_counted(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(patterns, "TEXT_CAP", [1000])
    engine = engine_for(tmp_path, rule("sel:\n    CommandLine|re: 'evil$'\ncondition: sel"))
    before = capped_texts()
    assert engine.process(proc(command_line="x" * 5000 + "evil")) == []  # beyond the cap
    assert capped_texts() == before + 1
    assert len(engine.process(proc(command_line="x" * 900 + "evil"))) == 1
    assert capped_texts() == before + 1


@pytest.mark.parametrize(("source", "reason"), [
    (r"(a)\1", "backreference"), (r"(?P<x>a)(?P=x)", "backreference"),
    ("foo(?=bar)", "lookaround"), ("(?<!x)y", "lookaround"), ("a++", "possessive"),
])
def test_patterns_re2_cannot_take_are_refused_with_the_reason(source: str,
                                                              reason: str) -> None:
    with pytest.raises(NotLinear, match=reason) as caught:
        LinearPattern(source)
    assert "refuses the rule" in str(caught.value)


def test_a_rule_with_a_backreference_is_refused_at_its_line(tmp_path: Path) -> None:
    result = load_text(tmp_path, rule("sel:\n    CommandLine|re: '(\\w+) \\1'\ncondition: sel"))
    assert result.rules == []
    (error,) = result.errors
    assert "backreference" in str(error) and "refuses the rule" in str(error)
    assert error.where.line is not None


def test_lone_surrogates_do_not_break_matching(tmp_path: Path) -> None:
    engine = engine_for(tmp_path, rule("sel:\n    CommandLine|re: 'nc -e'\ncondition: sel"))
    assert len(engine.process(proc(command_line="\ud800 nc -e /bin/sh"))) == 1
    assert engine.stats()["errors"] == 0
