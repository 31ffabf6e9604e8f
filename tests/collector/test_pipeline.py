"""Pipeline: a detector with process_many gets the batch at once (detection workers)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from collector.detection import DetectionEngine, load_rules
from collector.pipeline import AgentIdentity, Pipeline, Validate
from collector.records import Kind
from sisguard.v1 import sisguard_pb2 as pb

RULES = Path(__file__).resolve().parents[2] / "rules"
AGENT = AgentIdentity("agent-7", "web7", "org", "1.0")


class Batched:
    """The engine behind process_many, as the worker pool is (counting the calls)."""

    def __init__(self, fail: bool = False) -> None:
        self.engine = DetectionEngine(load_rules([RULES]))
        self.calls: list[int] = []
        self.fail = fail

    def process(self, event: dict[str, Any]) -> list[dict[str, Any]]:
        raise AssertionError("the pipeline must hand over the batch")

    def process_many(self, events: Sequence[dict[str, Any]]) -> list[list[dict[str, Any]]]:
        self.calls.append(len(events))
        if self.fail:
            raise RuntimeError("a worker gave up")
        return [self.engine.process(e) for e in events]


def _envelopes() -> list[pb.Envelope]:
    docs = [{"@timestamp": f"2026-11-27T01:00:{i:02d}Z",
             "event": {"kind": "event", "module": "sisguard", "dataset": "sisguard.auth",
                       "category": ["authentication"], "type": ["start"],
                       "action": "ssh_login", "outcome": "failure"},
             "process": {"name": "sshd"}, "user": {"name": "root"},
             "source": {"ip": "203.0.113.9"}} for i in range(7)]
    docs.append({"event": {"kind": "event"}})   # refused: no @timestamp, no detection
    return [pb.Envelope(seq=i + 1, dataset="sisguard.auth", document=json.dumps(d).encode())
            for i, d in enumerate(docs)]


def test_the_batch_goes_to_process_many_and_alerts_follow_the_events() -> None:
    detector = Batched()
    out = Pipeline([Validate()], detector=detector).process_batch(AGENT, _envelopes())
    assert detector.calls == [7]
    kinds = [r.kind for r in out.records]
    assert kinds.count(Kind.EVENT) == 7 and kinds.count(Kind.ALERT) == 1   # brute force
    assert kinds[:7] == [Kind.EVENT] * 7
    assert [s for s, _ in out.rejected] == [8]


def test_a_failed_batch_detection_costs_its_alerts_only() -> None:
    pipeline = Pipeline([Validate()], detector=Batched(fail=True))
    out = pipeline.process_batch(AGENT, _envelopes())
    assert [r.kind for r in out.records] == [Kind.EVENT] * 7
    assert pipeline.detect_errors == 7 and pipeline.alerts == 0
