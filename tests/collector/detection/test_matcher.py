"""Field access and value semantics: null, empty, arrays, numbers, booleans, keywords."""

from __future__ import annotations

from pathlib import Path

from collector.detection.fieldmap import MISSING
from collector.detection.matcher import lookup
from tests.collector.detection.detection_helpers import engine_for, net, proc, rule, ssh


def hits(tmp_path: Path, detection: str, event: dict[str, object],
         logsource: str = "product: linux\n    category: process_creation") -> bool:
    return bool(engine_for(tmp_path, rule(detection, logsource)).process(event))


def test_lookup_nested_and_literally_dotted_keys() -> None:
    doc = {"process": {"parent": {"name": "sh"}}, "file.path": "/x",
           "a": {"b.c": {"d": 1}}, "list": [{"x": 1}, {"x": [2, 3]}]}
    assert lookup(doc, "process.parent.name") == "sh"
    assert lookup(doc, "file.path") == "/x"
    assert lookup(doc, "a.b.c.d") == 1
    assert lookup(doc, "list.x") == [1, 2, 3]
    assert lookup(doc, "process.nope") is MISSING


def test_null_means_absent_or_none(tmp_path: Path) -> None:
    det = "sel:\n    process.parent.executable: null\ncondition: sel"
    assert hits(tmp_path, det, proc())
    assert hits(tmp_path, det, proc(process={"parent": {"executable": None}}))
    assert not hits(tmp_path, det, proc(process={"parent": {"executable": ""}}))


def test_empty_string_means_present_and_empty(tmp_path: Path) -> None:
    det = "sel:\n    CommandLine: ''\ncondition: sel"
    assert hits(tmp_path, det, proc(""))
    assert not hits(tmp_path, det, proc(process={"command_line": None}))
    event = proc()
    del event["process"]["command_line"]
    assert not hits(tmp_path, det, event)


def test_array_matches_when_any_element_does(tmp_path: Path) -> None:
    det = "sel:\n    process.args: '-e'\ncondition: sel"
    assert hits(tmp_path, det, proc(process={"args": ["nc", "-e", "/bin/sh"]}))
    assert not hits(tmp_path, det, proc(process={"args": ["nc", "-l"]}))
    negated = "sel:\n    process.args: '-e'\ncondition: not sel"
    assert not hits(tmp_path, negated, proc(process={"args": ["nc", "-e"]}))


def test_numbers_compare_numerically_or_as_text(tmp_path: Path) -> None:
    det = "sel:\n    DestinationPort: [888, 999]\ncondition: sel"
    ls = "product: linux\n    category: network_connection"
    assert hits(tmp_path, det, net(port=888), ls)
    assert hits(tmp_path, det, net(port="999"), ls)
    assert not hits(tmp_path, det, net(port=8888), ls)
    as_text = "sel:\n    DestinationPort: '443'\ncondition: sel"
    assert hits(tmp_path, as_text, net(port=443), ls)
    float_rule = "sel:\n    DestinationPort: 443\ncondition: sel"
    assert hits(tmp_path, float_rule, net(port=443.0), ls)


def test_true_false_strings_equal_booleans(tmp_path: Path) -> None:
    det = "sel:\n    sisguard.auth.invalid_user: 'true'\ncondition: sel"
    ls = "product: linux\n    service: sshd"
    assert hits(tmp_path, det, ssh("failure", sisguard={"auth": {"invalid_user": True}}), ls)
    assert not hits(tmp_path, det, ssh("failure", sisguard={"auth": {"invalid_user": False}}), ls)
    boolean = "sel:\n    sisguard.auth.invalid_user: true\ncondition: sel"
    assert hits(tmp_path, boolean, ssh("failure", sisguard={"auth": {"invalid_user": "TRUE"}}), ls)


def test_keywords_search_message_and_original(tmp_path: Path) -> None:
    det = "keywords:\n    - 'Corrupted MAC on input'\n    - 'bad*value'\ncondition: keywords"
    ls = "product: linux\n    service: sshd"
    event = ssh("failure", message="sshd[1]: corrupted mac on input.")
    assert hits(tmp_path, det, event, ls)
    original = ssh("failure", message="x")
    original["event"]["original"] = "Bad client public DH value"
    assert hits(tmp_path, det, original, ls)
    assert not hits(tmp_path, det, ssh("failure", message="all fine"), ls)
