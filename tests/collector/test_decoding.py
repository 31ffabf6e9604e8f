"""collector/decoding.py: every bad document is refused with a reason naming the field."""

from __future__ import annotations

import json
from typing import Any

import pytest

from collector.decoding import (
    MAX_DEPTH,
    MAX_DOCUMENT_BYTES,
    Rejection,
    decode_document,
    strip_owned,
)


def good(**extra: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {"@timestamp": "2026-12-01T10:00:00.000Z",
                           "event": {"kind": "event", "dataset": "sisguard.fim"}}
    doc.update(extra)
    return doc


def refused(raw: bytes) -> str:
    with pytest.raises(Rejection) as info:
        decode_document(raw)
    return str(info.value)


def test_a_good_document_passes_unchanged() -> None:
    doc = good(source={"ip": "10.0.0.1", "port": "22"}, file={"size": 12, "mtime": 1700000000000},
               process={"interactive": "true", "args": ["a", "b"]}, labels={"x": 1})
    assert decode_document(json.dumps(doc).encode()) == (doc, [])


def test_deep_nesting_is_refused_not_a_recursion_error() -> None:
    assert "deeper" in refused(b'{"a":' * 100_000 + b"1" + b"}" * 100_000)
    assert "deeper" in refused(b"[" * 100_000 + b"]" * 100_000)
    shallow_enough = b'{"x":' * 200 + b"1" + b"}" * 200   # parses, but over MAX_DEPTH
    assert f"deeper than {MAX_DEPTH}" in refused(shallow_enough)


def test_size_cap() -> None:
    raw = json.dumps(good(message="x" * MAX_DOCUMENT_BYTES)).encode()
    assert "over the limit" in refused(raw)


@pytest.mark.parametrize("raw, where", [
    (b'{"message": "\\ud800"}', "'message'"),
    (b'{"sisguard": {"x": ["ok", "\\udfff tail"]}}', "'sisguard.x'"),
    (b'{"\\ud800": 1}', "'<key>'"),
])
def test_lone_surrogates_are_refused_with_the_field(raw: bytes, where: str) -> None:
    reason = refused(raw)
    assert "not valid Unicode" in reason and where in reason


@pytest.mark.parametrize("raw", [
    '{"a": "\ud800"}'.encode("utf-16-le", "surrogatepass"),   # JSON, but not UTF-8
    '{"a": "\ud800"}'.encode("utf-8", "surrogatepass"),       # a surrogate in raw bytes
    '{"a": "x"}'.encode("utf-32"),
])
def test_only_utf8_is_taken(raw: bytes) -> None:
    assert "not UTF-8" in refused(raw)


@pytest.mark.parametrize("raw", [b"[1, 2]", b'"text"', b"42", b"null", b"\xff\xfe", b"{",
                                 b'{"a": NaN}', b'{"a": -Infinity}', b"",
                                 b'{"a": 1e400}', b'{"a": [-1e999]}'])
def test_not_a_json_object(raw: bytes) -> None:
    assert refused(raw)


@pytest.mark.parametrize("doc, field", [
    ({"source": {"ip": "x"}}, "source.ip"),
    ({"@timestamp": {}}, "@timestamp"),
    ({"@timestamp": "yesterday"}, "@timestamp"),
    ({"file": {"size": "big"}}, "file.size"),
    ({"file": {"size": 2**64}}, "file.size"),
    ({"file": {"size": True}}, "file.size"),
    ({"file": "etc/passwd"}, "file"),
    ({"event": ["a"]}, "event"),
    ({"event": {"action": {"x": 1}}}, "event.action"),
    ({"process": {"interactive": "maybe"}}, "process.interactive"),
    ({"destination": {"ip": ["10.0.0.1", "fe80::1%eth0"]}}, "destination.ip"),
    ({"labels": "x"}, "labels"),
])
def test_wrong_types_for_mapped_fields_name_the_field(doc: dict[str, Any], field: str) -> None:
    assert f"'{field}'" in refused(json.dumps(doc).encode())


def test_nulls_and_arrays_of_objects_where_objects_are_mapped() -> None:
    doc = {"source": None, "file": [{"size": 1}, None], "labels": None, "user": {"name": None}}
    assert decode_document(json.dumps(doc).encode())[0] == doc
    assert "'file.size'" in refused(json.dumps({"file": [{"size": "big"}]}).encode())


def test_dotted_keys_are_paths_in_the_mapping() -> None:
    assert "'source.ip'" in refused(b'{"source.ip": "x"}')
    assert "'event.kind.x'" in refused(b'{"event.kind.x": 1}')
    assert "empty" in refused(b'{"a..b": 1}') and "empty" in refused(b'{"": 1}')
    assert decode_document(b'{"labels.any.thing": [1, {"x": "y"}]}')[0]


def test_unmapped_fields_may_hold_anything() -> None:
    doc = {"custom": {"ip": "x", "size": "big"}, "sisguard": {"fim": {"extra": {"a": [1]}}}}
    assert decode_document(json.dumps(doc).encode())[0] == doc


def test_owned_fields_are_stripped_and_named() -> None:
    doc = good(rule={"id": "forged"}, threat={"framework": "MITRE"},
               sisguard={"alert": {"level": "critical"}, "fim": {"changed": ["mode"]}})
    doc["event"]["kind"] = "alert"
    event, stripped = decode_document(json.dumps(doc).encode())
    assert stripped == ["event.kind", "rule", "sisguard.alert", "threat"]
    assert event["event"]["kind"] == "event"
    assert "rule" not in event and "threat" not in event
    assert event["sisguard"] == {"fim": {"changed": ["mode"]}}


def test_an_agent_cannot_forge_what_the_collector_notes() -> None:
    doc = good(sisguard={"stripped": ["nothing"], "sequence_anomaly": {"kinds": ["x"]},
                         "deadletter": {"reason": "fake"}})
    event, stripped = decode_document(json.dumps(doc).encode())
    assert stripped == ["sisguard.deadletter", "sisguard.sequence_anomaly", "sisguard.stripped"]
    assert event["sisguard"] == {}


def test_agent_kinds_are_kept() -> None:
    for kind in ("event", "state"):
        doc = good()
        doc["event"]["kind"] = kind
        assert strip_owned(doc) == [] and doc["event"]["kind"] == kind
    assert strip_owned({"rule": "not even an object"}) == ["rule"]
