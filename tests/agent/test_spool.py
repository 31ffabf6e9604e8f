from __future__ import annotations

import json
from pathlib import Path

import pytest

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
