"""The stages (collector/stages.py) as the pipeline runs them: one shape, each guarded
and counted; a bug costs one event, a detection failure only its alerts."""

from __future__ import annotations

import json
from typing import Any

import pytest

from collector.pipeline import Pipeline
from collector.stages import AgentIdentity, Event, Rejection, Validate
from sisguard.v1 import sisguard_pb2 as pb

AGENT = AgentIdentity("agent-1", "web1", "org", "1.0")


def envelope(seq: int, **fields: Any) -> pb.Envelope:
    doc = {"@timestamp": "2026-01-01T00:00:00Z",
           "event": {"kind": "event", "dataset": "sisguard.fim"}, **fields}
    return pb.Envelope(seq=seq, dataset="sisguard.fim", document=json.dumps(doc).encode())


class Rules:
    """A detector: one alert per event, and a bug on the event with ``message: boom``."""

    def __init__(self) -> None:
        self.seen: list[int] = []

    def process(self, event: dict[str, Any]) -> list[dict[str, Any]]:
        self.seen.append(event["event"]["sequence"])
        if event.get("message") == "boom":
            raise RuntimeError("a rule engine bug")
        return [{"event": {"id": f"alert-{event['event']['id']}", "kind": "alert"}}]


class Broken:
    name = "broken"
    fatal = True

    def process(self, event: Event) -> Event | None:
        if event.document.get("message") == "crash":
            raise KeyError("oops")
        if event.document.get("message") == "drop":
            return None
        return event


def test_stages_in_order_each_counted() -> None:
    rules = Rules()
    pipeline = Pipeline([Validate(), Broken()], detector=rules)
    assert [s.name for s in pipeline.stages] == ["decode", "enrich", "validate", "broken",
                                                 "detect"]
    outcome = pipeline.process_batch(AGENT, [
        envelope(1), envelope(2, message="crash"), envelope(3, message="drop"),
        pb.Envelope(seq=4, document=b"{not json"), envelope(5, message="boom"),
        envelope(6, event={"kind": "event"}),
    ])
    assert [(r.kind.value, r.doc_id) for r in outcome.records] == [
        ("events", "agent-1-1"), ("alerts", "alert-agent-1-1"), ("events", "agent-1-5")]
    reasons = dict(outcome.rejected)
    assert reasons[2] == "stage broken failed: KeyError: 'oops'"
    assert reasons[4].startswith("document is not valid JSON")
    assert reasons[6] == "missing required field 'event.dataset'"
    assert sorted(reasons) == [2, 4, 6] and len(outcome.dead_letters) == 3
    counters = {name: vars(c) for name, c in pipeline.counters.items()}
    assert counters["decode"] == {"passed": 5, "rejected": 1, "errors": 0}
    assert counters["validate"] == {"passed": 4, "rejected": 1, "errors": 0}
    assert counters["broken"] == {"passed": 3, "rejected": 0, "errors": 1}
    # a detection failure costs the event's alerts, never the event
    assert counters["detect"] == {"passed": 1, "rejected": 0, "errors": 1}
    assert pipeline.detect_errors == 1 and pipeline.alerts == 1


def test_a_resent_event_is_not_detected_again() -> None:
    rules = Rules()
    pipeline = Pipeline([Validate()], detector=rules)
    outcome = pipeline.process_batch(AGENT, [envelope(1), envelope(2)],
                                     skip_detection=lambda seq: seq == 1)
    assert rules.seen == [2]
    assert [r.doc_id for r in outcome.records] == ["agent-1-1", "agent-1-2", "alert-agent-1-2"]


def test_fields_only_the_collector_writes_are_cut_and_counted() -> None:
    pipeline = Pipeline([Validate()])
    outcome = pipeline.process_batch(AGENT, [envelope(1, rule={"id": "forged"})])
    document = outcome.records[0].document
    assert "rule" not in document and document["sisguard"]["stripped"] == ["rule"]
    assert pipeline.stripped == {"rule": 1}
    assert document["agent"]["id"] == "agent-1" and document["event"]["id"] == "agent-1-1"


def test_a_refused_sequence_number_is_dead_lettered_before_any_stage() -> None:
    pipeline = Pipeline([Validate()])
    outcome = pipeline.process_batch(AGENT, [envelope(1), envelope(9)],
                                     refuse=lambda seq: "leaps" if seq == 9 else None)
    assert outcome.rejected == [(9, "leaps")]
    assert pipeline.counters["decode"].passed == 1


def test_validate_raises_the_reason() -> None:
    event = Event(pb.Envelope(seq=1), AGENT, "2026-01-01T00:00:00Z",
                  document={"event": {"kind": "event"}})
    with pytest.raises(Rejection, match=r"^missing required field '@timestamp'$"):
        Validate().process(event)
