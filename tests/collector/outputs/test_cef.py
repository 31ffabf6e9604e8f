"""CEF: escaping round-trips through a CEF parser, and hostile text never makes a field."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from collector.outputs.cef import (
    CefConfig,
    cef_severity,
    escape_header,
    escape_value,
    format_cef,
    parse_cef,
)

ATTACK = "/shell.php?a=1|CEF:0|evil|x|1|2|3|10|act=forged\nsuser=root\\ cs3=owned="


def alert(url: str = ATTACK) -> dict[str, object]:
    return {
        "@timestamp": "2026-12-02T00:00:01.5Z", "message": "Web shell | request",
        "event": {"kind": "alert", "id": "a1", "severity": 73, "dataset": "sisguard.alert",
                  "action": "access"},
        "rule": {"id": "rule-1", "name": "Web|Shell\\Access\nnext"},
        "host": {"name": "web01"}, "agent": {"id": "agent-1"},
        "source": {"ip": "203.0.113.9", "port": 4444}, "url": {"original": url},
        "organization": {"name": "So TT&TT"}, "sisguard": {"alert": {"level": "high"}},
    }


def test_header_and_extension_escaping() -> None:
    assert escape_header("a|b\\c\nd") == "a\\|b\\\\c d"
    assert escape_value("a=b\\c\nd\re") == "a\\=b\\\\c\\nd\\re"
    assert escape_value("tab\there") == "tab here"


def test_severity_scale() -> None:
    assert [cef_severity(s) for s in (99, 73, 47, 21, 1, 0, None, True, "9")] == \
        [10, 7, 5, 2, 0, 0, 0, 0, 0]


def test_an_attackers_url_stays_one_value_in_one_line() -> None:
    line = format_cef(alert(), doc_id="a1", kind="alerts",
                      config=CefConfig(vendor="Sở TT|TT", product="sisguard", version="2"))
    assert "\n" not in line and "\r" not in line
    header, ext = parse_cef(line)
    assert header == ["CEF:0", "Sở TT|TT", "sisguard", "2", "rule-1",
                      "Web|Shell\\Access next", "7"]
    assert ext["request"] == ATTACK
    assert ext["externalId"] == "a1" and ext["src"] == "203.0.113.9" and ext["spt"] == "4444"
    assert "act" in ext and ext["act"] == "access"       # not the forged one
    assert ext.get("suser") is None and ext["cs3"] == "rule-1"
    assert ext["cs2Label"] == "organization" and ext["cs2"] == "So TT&TT"
    assert ext["rt"] == "1796169601500"     # 2026-12-02T00:00:01.5Z in ms


def test_values_that_fail_their_check_are_left_out() -> None:
    doc = alert()
    doc["source"] = {"ip": "not an ip", "port": 99999}
    _, ext = parse_cef(format_cef(doc, doc_id="a1", kind="alerts", config=CefConfig()))
    assert "src" not in ext and "spt" not in ext


def test_long_values_are_capped() -> None:
    line = format_cef(alert("/" + "a" * 10_000), doc_id="a1", kind="alerts",
                      config=CefConfig(max_value_chars=100))
    _, ext = parse_cef(line)
    assert len(ext["request"]) == 100 and ext["request"].endswith("...")


@given(st.text(max_size=200))
def test_any_text_round_trips_as_a_value(text: str) -> None:
    line = format_cef(alert(text), doc_id="a1", kind="alerts", config=CefConfig())
    header, ext = parse_cef(line)
    assert "\n" not in line and len(header) == 7
    clean = "".join(" " if (ord(c) < 32 and c not in "\r\n") or ord(c) == 127 else c
                    for c in text).replace("\r\n", "\n")   # one line break, CEF's \n
    if text:
        assert ext["request"] == clean
