from __future__ import annotations

import json
import time
from pathlib import Path

from collector.outputs.archive import JsonlArchive
from collector.records import Kind, Outcome, Record


def _record(agent: str, seq: int, day: str = "2026-11-29") -> Record:
    doc = {"@timestamp": f"{day}T01:02:03Z", "agent": {"id": agent},
           "event": {"sequence": seq, "id": f"{agent}-{seq}",
                     "ingested": f"{day}T01:02:04.000000Z"}}
    return Record(Kind.EVENT, f"{agent}-{seq}", doc, agent_id=agent, seq=seq)


def test_resent_events_are_duplicates_per_agent(tmp_path: Path) -> None:
    archive = JsonlArchive(tmp_path)
    archive.connect()
    archive.publish([_record("a", 1), _record("a", 2), _record("b", 1)])
    result = archive.publish([_record("a", 2), _record("a", 3), _record("b", 1)])
    assert result.outcomes == [Outcome.DUPLICATE, Outcome.STORED, Outcome.DUPLICATE]
    lines = (tmp_path / "events-2026-11-29.jsonl").read_text().splitlines()
    assert len(lines) == 4


def test_marks_are_recovered_after_a_crash_without_checkpoint(tmp_path: Path) -> None:
    archive = JsonlArchive(tmp_path)
    archive.connect()
    archive.publish([_record("a", 1)])
    # a crash: later lines written and fsynced, the checkpoint never updated
    with open(tmp_path / "events-2026-11-30.jsonl", "a") as f:
        f.write(json.dumps(_record("a", 7, "2026-11-30").document) + "\n")
        f.write('{"torn": ')  # and a torn last line
    recovered = JsonlArchive(tmp_path)
    recovered.connect()
    assert recovered.high_water_mark("a") == 7
    assert (tmp_path / "events-2026-11-30.jsonl").read_text().endswith("}\n")
    assert recovered.publish([_record("a", 7)]).outcomes == [Outcome.DUPLICATE]
    assert recovered.publish([_record("a", 8)]).outcomes == [Outcome.STORED]


def test_alerts_and_events_go_to_their_own_daily_files(tmp_path: Path) -> None:
    archive = JsonlArchive(tmp_path)
    archive.connect()
    alert = Record(Kind.ALERT, "x", {"@timestamp": "2026-11-29T00:00:00Z", "rule": {},
                                     "event": {"ingested": "2026-11-29T00:00:01Z"}})
    archive.publish([_record("a", 1, "2026-11-28"), alert])
    assert (tmp_path / "events-2026-11-28.jsonl").exists()
    assert (tmp_path / "alerts-2026-11-29.jsonl").exists()


def test_files_are_chosen_by_ingestion_day_not_by_the_agents_timestamp(
        tmp_path: Path) -> None:
    archive = JsonlArchive(tmp_path)
    archive.connect()
    future = _record("a", 1)
    future.document["@timestamp"] = "2099-01-01T00:00:00Z"
    bare = Record(Kind.ALERT, "y", {"@timestamp": "2098-01-01T00:00:00Z", "rule": {}})
    archive.publish([future, bare])
    names = sorted(p.name for p in tmp_path.glob("*.jsonl"))
    today = time.strftime("%Y-%m-%d", time.gmtime())
    assert names == sorted(["events-2026-11-29.jsonl", f"alerts-{today}.jsonl"])
