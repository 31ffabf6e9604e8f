from __future__ import annotations

import copy
import json
import os
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.spool import Spool, SpoolError, read_depth


def _docs(n: int, size: int = 10) -> list[dict[str, object]]:
    return [{"event": {"dataset": "sisguard.fim"}, "message": "x" * size} for _ in range(n)]


def test_sequence_numbers_increase_and_survive_restart_and_acks(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "s.db", agent_id="a")
    assert spool.append(_docs(3)) == 3
    spool.ack(1, 3)
    spool.close()
    spool = Spool(tmp_path / "s.db", agent_id="a")
    assert spool.append(_docs(1)) == 4  # never reused, even after the rows were deleted
    event = spool.read_after(0, limit=10, max_bytes=1 << 20)[0]
    doc = json.loads(event.document)
    assert (event.seq, doc["event"]["id"], doc["event"]["sequence"]) == (4, "a-4", 4)


def test_ack_deletes_only_the_acked_range(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "s.db", agent_id="a")
    spool.append(_docs(10))
    assert spool.ack(3, 5) == 3
    assert [e.seq for e in spool.read_after(0, limit=100, max_bytes=1 << 20)] == [
        1, 2, 6, 7, 8, 9, 10]
    assert spool.depth().events == 7


def test_read_respects_byte_limit_but_returns_at_least_one(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "s.db", agent_id="a")
    spool.append(_docs(5, size=1000))
    assert len(spool.read_after(0, limit=100, max_bytes=2500)) == 2
    assert len(spool.read_after(0, limit=100, max_bytes=10)) == 1


def test_overflow_drops_oldest_and_says_so(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "s.db", agent_id="a", max_bytes=20_000)
    for _ in range(10):
        spool.append(_docs(10, size=500))
    depth = spool.depth()
    assert depth.bytes <= 20_000
    assert depth.dropped > 0
    events = spool.read_after(0, limit=1000, max_bytes=1 << 30)
    notices = [json.loads(e.document) for e in events
               if json.loads(e.document)["event"].get("action") == "spool_dropped"]
    assert notices, "a drop must be reported by an event"
    total = sum(n["sisguard"]["spool"]["dropped"] for n in notices)
    # the notices themselves may be dropped later: the running total never is
    assert notices[-1]["sisguard"]["spool"]["dropped_total"] == depth.dropped
    assert total <= depth.dropped
    assert read_depth(tmp_path / "s.db")["dropped"] == depth.dropped


def test_unusable_spool_is_a_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "s.db"
    bad.write_bytes(b"this is not a database" * 100)
    with pytest.raises(SpoolError, match=r"s\.db"):
        Spool(bad, agent_id="a")


# --- one document costs only itself -------------------------------------------------

LONE_SURROGATES = st.sampled_from(["\udcff", "\ud800", "\udfff", "\udc80"])
TEXT = st.lists(st.one_of(st.characters(exclude_categories=()), LONE_SURROGATES),
                max_size=12).map("".join)
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-(2**63), 2**63 - 1),
                    st.floats(), TEXT)
JSONISH = st.recursive(SCALARS, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(TEXT, inner, max_size=4)), max_leaves=20)


def _stored(spool: Spool) -> list[dict[str, Any]]:
    return [json.loads(e.document) for e in spool.read_after(0, limit=10_000,
                                                             max_bytes=1 << 30)]


def _is_replacement(doc: dict[str, Any]) -> bool:
    return bool(doc["event"]["action"] == "sensor_error"
                and doc["event"]["dataset"] == "sisguard.agent"
                and doc["sisguard"]["sensor"]["stage"] == "spool")


@settings(max_examples=80, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.dictionaries(TEXT, JSONISH, max_size=5), min_size=1, max_size=5),
       st.dictionaries(TEXT, JSONISH, max_size=3))
def test_any_document_round_trips_or_is_replaced_and_nothing_wedges(
        tmp_path_factory: pytest.TempPathFactory, docs: list[dict[str, Any]],
        event: dict[str, Any]) -> None:
    spool = Spool(tmp_path_factory.mktemp("spool") / "s.db", agent_id="a")
    try:
        originals = []
        for doc in docs:
            doc["event"] = {**event, "dataset": "sisguard.fim"}
            originals.append(copy.deepcopy(doc))
        last = spool.append(docs)
        stored = _stored(spool)
        assert len(stored) == len(docs) and last == len(docs)
        for seq, (original, doc) in enumerate(zip(originals, stored), start=1):
            assert doc["event"]["sequence"] == seq and doc["event"]["id"] == f"a-{seq}"
            try:
                json.dumps(original, allow_nan=False, ensure_ascii=False).encode()
            except (ValueError, UnicodeError):
                assert _is_replacement(doc), doc
                assert doc["sisguard"]["sensor"]["name"] == "fim"
                assert doc["sisguard"]["sensor"]["field"], "the offending field is named"
            else:
                original["event"].update(id=f"a-{seq}", sequence=seq)
                assert doc == original or _nan_free_equal(doc, original)
        # the spool never wedges: the next append and a read go through
        assert spool.append([{"event": {"dataset": "sisguard.marker"}}]) == len(docs) + 1
        assert _stored(spool)[-1]["event"]["dataset"] == "sisguard.marker"
    finally:
        spool.close()


def _nan_free_equal(a: Any, b: Any) -> bool:
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


def test_bad_document_is_replaced_naming_the_field_and_the_rest_flows(tmp_path: Path) -> None:
    replaced: list[dict[str, Any]] = []
    spool = Spool(tmp_path / "s.db", agent_id="a", on_replaced=replaced.append)
    cwd = os.fsdecode(b"/tmp/x\xffy")
    docs: list[Any] = [
        {"event": {"dataset": "sisguard.process", "action": "exec"},
         "process": {"working_directory": cwd, "args": ["ls", "ok"]}},
        {"event": {"dataset": "sisguard.fim"}, "file": {"path": "/srv/ok"}},
        {"event": {"dataset": "sisguard.fim"}, "file": {"size": float("nan")}},
        {"event": {"dataset": "sisguard.fim"}, "file": {"\ud800key": 1}},
        "not a document",
        {"event": ["not", "an", "object"]},
        {"event": {"dataset": "sisguard.fim\udcff"}, "file": {"path": "/srv/two"}},
    ]
    spool.append(docs)
    stored = _stored(spool)
    assert [d["event"]["sequence"] for d in stored] == [1, 2, 3, 4, 5, 6, 7]
    first = stored[0]
    assert _is_replacement(first)
    assert first["sisguard"]["sensor"] == {"name": "process", "dataset": "sisguard.process",
                                           "stage": "spool",
                                           "field": "process.working_directory",
                                           "action": "exec"}
    assert "UTF-8" in first["error"]["message"]
    assert stored[1]["file"]["path"] == "/srv/ok"
    assert stored[2]["sisguard"]["sensor"]["field"] == "file.size"
    assert stored[3]["sisguard"]["sensor"]["field"] == "file.\\xed\\xa0\\x80key"
    assert _is_replacement(stored[4]) and _is_replacement(stored[5])
    assert stored[6]["sisguard"]["sensor"]["field"] == "event.dataset"
    assert stored[6]["sisguard"]["sensor"]["dataset"] == "sisguard.fim\\xff"
    assert len(replaced) == 6 and spool.replaced == 6


def test_a_row_with_invalid_bytes_does_not_stop_reads(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "s.db", agent_id="a")
    spool.append(_docs(1))
    db = sqlite3.connect(tmp_path / "s.db")
    db.execute("UPDATE events SET dataset = CAST(X'666fff' AS TEXT) WHERE seq = 1")
    db.commit()
    db.close()
    spool.append(_docs(1))
    assert [e.dataset for e in spool.read_after(0, limit=10, max_bytes=1 << 20)] == [
        "fo\\xff", "sisguard.fim"]


def test_oversized_document_is_cut_to_fit_and_says_what_was_cut(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "s.db", agent_id="a", max_document_bytes=20_000)
    huge = ["x" * 100_000] * 3 + ["y"] * 1000
    spool.append([{"event": {"dataset": "sisguard.process", "action": "exec"},
                   "process": {"pid": 7, "args": huge, "command_line": " ".join(huge)}},
                  *_docs(1)])
    stored = _stored(spool)
    cut = stored[0]
    assert cut["event"]["action"] == "exec" and cut["process"]["pid"] == 7
    assert "process.command_line" in cut["sisguard"]["truncated"]
    assert "process.args" in cut["sisguard"]["truncated"]
    assert cut["process"]["args"][0].startswith("x") and len(cut["process"]["args"]) <= 256
    assert len(spool.read_after(0, limit=1, max_bytes=1 << 20)[0].document) <= 20_000
    assert stored[1]["message"] == "x" * 10


def test_document_too_large_even_when_cut_is_replaced_naming_its_largest_field(
        tmp_path: Path) -> None:
    spool = Spool(tmp_path / "s.db", agent_id="a", max_document_bytes=10_000)
    many = {f"k{i}": i for i in range(5000)}   # keys are never cut
    spool.append([{"event": {"dataset": "sisguard.fim"}, "file": {"many": many,
                                                                  "path": "/a"}},
                  *_docs(1)])
    stored = _stored(spool)
    assert _is_replacement(stored[0])
    assert stored[0]["sisguard"]["sensor"]["field"] == "file.many"
    assert "exceeds 10000" in stored[0]["error"]["message"]
    assert stored[1]["message"] == "x" * 10


def test_deep_and_circular_documents_are_replaced(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "s.db", agent_id="a")
    deep: dict[str, Any] = {}
    node = deep
    for _ in range(5000):
        node["d"] = {}
        node = node["d"]
    loop: dict[str, Any] = {"event": {"dataset": "sisguard.auth"}}
    loop["self"] = loop
    spool.append([{"event": {"dataset": "sisguard.fim"}, "deep": deep}, loop, *_docs(1)])
    stored = _stored(spool)
    assert _is_replacement(stored[0]) and _is_replacement(stored[1])
    assert stored[1]["sisguard"]["sensor"]["field"] == "self"
    assert stored[2]["message"] == "x" * 10
