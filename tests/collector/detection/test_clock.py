"""Time you can trust and identity in every group key, through the engine and the shipped
brute-force rule: one agent's clock never moves another agent's windows, two agents with
the same host.name never share a group, skewed events are flagged and raise one alert."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from collector.detection import DetectionEngine, load_rules
from collector.detection.clock import TIME_SKEW_RULE, EventClock, parse_time

REPO = Path(__file__).resolve().parents[3]
BRUTE_FORCE = "27346c19-5e37-480f-bacf-a7815221eab9"
NOW = datetime(2026, 12, 1, 10, 0, 0, tzinfo=UTC)
_seq = iter(range(1, 1_000_000))


def iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def failure(agent: str, at: datetime | str, *, host: str = "hostA",
            ingested: datetime = NOW, source: str = "203.0.113.9") -> dict[str, Any]:
    """A failed SSH login as the collector hands it to detection (after enrich)."""
    n = next(_seq)
    return {
        "@timestamp": at if isinstance(at, str) else iso(at),
        "event": {"kind": "event", "module": "sisguard", "dataset": "sisguard.auth",
                  "category": ["authentication"], "type": ["start"], "action": "ssh_login",
                  "outcome": "failure", "id": f"{agent}-{n}", "ingested": iso(ingested)},
        "agent": {"id": agent, "name": host}, "host": {"name": host},
        "organization": {"name": f"org-of-{agent}"},
        "source": {"ip": source, "port": 40000 + n}, "user": {"name": "root"},
        "process": {"name": "sshd", "pid": 3000 + n},
        "message": f"Failed password for root from {source} port {40000 + n} ssh2",
    }


@pytest.fixture(scope="module")
def auth_rules() -> Any:
    result = load_rules([REPO / "rules" / "auth"])
    assert not result.errors, [str(e) for e in result.errors]
    return result


def brute_forces(alerts: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [a for a in alerts if a["rule"]["id"] == BRUTE_FORCE]


def test_a_2099_failed_login_from_agent_x_does_not_stop_agent_y_brute_force(
        auth_rules: Any) -> None:
    engine = DetectionEngine(auth_rules)
    alerts: list[dict[str, Any]] = []
    for i in range(3):
        alerts += engine.process(failure("agent-y", NOW + timedelta(seconds=3 * i)))
    rogue = failure("agent-x", "2099-01-01T00:00:00Z", host="hostA")
    skew = engine.process(rogue)
    for i in range(3, 6):
        alerts += engine.process(failure("agent-y", NOW + timedelta(seconds=3 * i)))
    fired = brute_forces(alerts)
    assert len(fired) == 1 and fired[0]["agent"]["id"] == "agent-y"
    assert fired[0]["source"]["ip"] == "203.0.113.9" and fired[0]["host"]["name"] == "hostA"
    # the rogue event: flagged with its offset, and one alert of its own
    offset = parse_time("2099-01-01T00:00:00Z")
    assert offset is not None
    assert rogue["sisguard"]["time_skew"] == pytest.approx(offset - NOW.timestamp(), abs=1)
    assert [a["rule"]["id"] for a in skew] == [TIME_SKEW_RULE.id]
    assert skew[0]["agent"]["id"] == "agent-x"
    assert skew[0]["@timestamp"] == iso(NOW)          # not 2099: analysts must see it
    assert skew[0]["sisguard"]["time_skew"] == rogue["sisguard"]["time_skew"]
    assert engine.stats()["time_skewed_events"] == 1


def test_without_clamping_the_rogue_clock_still_moves_only_its_own_windows(
        auth_rules: Any) -> None:
    """Events without event.ingested (as in rule tests) are not clamped: the per-sender
    watermark alone keeps agent y's window open."""
    engine = DetectionEngine(auth_rules)
    alerts: list[dict[str, Any]] = []
    for i in range(6):
        y = failure("agent-y", NOW + timedelta(seconds=3 * i))
        del y["event"]["ingested"]
        alerts += engine.process(y)
        x = failure("agent-x", f"{2090 + i}-01-01T00:00:00Z")
        del x["event"]["ingested"]
        alerts += engine.process(x)
    assert [a["agent"]["id"] for a in brute_forces(alerts)] == ["agent-y"]


def test_two_agents_with_the_same_host_name_never_share_a_group(auth_rules: Any) -> None:
    engine = DetectionEngine(auth_rules)
    alerts: list[dict[str, Any]] = []
    for i in range(5):  # 5 + 5 failures on "hostA" from one address: neither is > 5
        at = NOW + timedelta(seconds=i)
        alerts += engine.process(failure("agency-a-1", at, host="hostA"))
        alerts += engine.process(failure("agency-c-9", at, host="hostA"))
    assert brute_forces(alerts) == []
    alerts = engine.process(failure("agency-c-9", NOW + timedelta(seconds=6), host="hostA"))
    (fired,) = brute_forces(alerts)
    assert fired["agent"]["id"] == "agency-c-9"
    assert fired["organization"]["name"] == "org-of-agency-c-9"
    assert fired["host"]["name"] == "hostA"   # the rule's group-by fields are still shown
    assert all(e.startswith("agency-c-9-") for e in fired["sisguard"]["alert"]["event_ids"])


def test_correlation_time_is_clamped_to_the_ingestion_time(auth_rules: Any) -> None:
    """Six failures the agent dates hours apart (beyond the 600 s allowed behind), taken
    in within six seconds: each counts at its ingestion time minus 600 s, so the six
    fall in one minute and the brute force fires; one skew alert for the agent."""
    engine = DetectionEngine(auth_rules, clock=EventClock(ahead=300, behind=600))
    alerts: list[dict[str, Any]] = []
    for i in range(6):
        alerts += engine.process(failure("agent-z", NOW - timedelta(hours=i + 1),
                                         ingested=NOW + timedelta(seconds=i)))
    assert len(brute_forces(alerts)) == 1   # all six at "ingested - 600 s", in one minute
    skews = [a for a in alerts if a["rule"]["id"] == TIME_SKEW_RULE.id]
    assert len(skews) == 1                  # six skewed events, one alert per agent


def test_the_skew_alert_is_raised_again_after_the_interval_and_per_agent() -> None:
    clock = EventClock(alert_interval=3600)
    raised = []
    for agent, ingested in (("a", NOW), ("a", NOW + timedelta(minutes=59)), ("b", NOW),
                            ("a", NOW + timedelta(minutes=61))):
        _, alert = clock.judge(failure(agent, "2099-01-01T00:00:00Z", ingested=ingested))
        raised.append(alert is not None)
    assert raised == [True, False, True, True]
    assert clock.stats() == {"time_skewed_events": 4, "time_skew_alerts": 3}


@pytest.mark.parametrize(("stamp", "flagged"), [
    ("2026-12-01T09:59:00Z", False),
    ("2026-12-01T10:04:59+00:00", False),
    ("2026-12-01T10:05:01Z", True),
    ("2026-12-01T12:00:00+02:00", False),          # the same instant as ingested
    ("2026-12-01T10:00:00", False),                # no zone: UTC
    ("2026-11-24T10:00:01Z", False),
    ("2026-11-24T09:59:59Z", True),
    ("1970-01-01T00:00:00Z", True),
    (4102444800, True),                            # epoch seconds, 2100
])
def test_flagged_exactly_outside_the_bounds(stamp: Any, flagged: bool) -> None:
    event = failure("a", "x")
    event["@timestamp"] = stamp
    event["sisguard"] = {"time_skew": 12345}      # an agent's own value never stays
    ts, alert = EventClock().judge(event)
    assert ("time_skew" in event["sisguard"]) is flagged
    assert (alert is not None) is flagged
    if flagged:
        assert ts is not None
        assert NOW.timestamp() - 7 * 86400 <= ts <= NOW.timestamp() + 300


def test_a_non_object_sisguard_field_cannot_hide_the_flag() -> None:
    event = failure("a", "2099-01-01T00:00:00Z")
    event["sisguard"] = "not an object"
    EventClock().judge(event)
    assert event["sisguard"]["time_skew"] > 0
