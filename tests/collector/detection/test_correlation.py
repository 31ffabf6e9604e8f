"""Correlation rules: event_count, value_count, temporal, temporal_ordered, chains."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from collector.detection import DetectionEngine
from tests.collector.detection.detection_helpers import engine_for, load_text, ssh

T0 = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)


def at(seconds: float) -> str:
    return (T0 + timedelta(seconds=seconds)).isoformat().replace("+00:00", "Z")


SSH_RULES = """
title: SSH login failed
id: 5a1d0000-0000-0000-0000-000000000001
name: ssh_failed
logsource:
    product: linux
    service: sshd
detection:
    sel:
        event.action: ssh_login
        event.outcome: failure
    condition: sel
---
title: SSH login succeeded
id: 5a1d0000-0000-0000-0000-000000000002
name: ssh_success
logsource:
    product: linux
    service: sshd
detection:
    sel:
        event.action: ssh_login
        event.outcome: success
    condition: sel
---
title: SSH brute force
id: 5a1d0000-0000-0000-0000-000000000003
name: ssh_brute_force
level: high
tags: [attack.credential-access, attack.t1110.001]
correlation:
    type: event_count
    rules: [ssh_failed]
    group-by: [SourceIp, host.name]
    timespan: 60s
    condition:
        gt: 5
---
title: SSH login after brute force
id: 5a1d0000-0000-0000-0000-000000000004
level: critical
correlation:
    type: temporal_ordered
    rules: [ssh_brute_force, ssh_success]
    group-by: [source.ip]
    timespan: 5m
"""


def feed(engine: DetectionEngine, events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    alerts: list[dict[str, Any]] = []
    for event in events:
        alerts.extend(engine.process(event))
    return alerts


def titles(alerts: list[dict[str, Any]]) -> list[str]:
    return [a["rule"]["name"] for a in alerts]


def test_more_than_five_failures_from_one_address_in_60s(tmp_path: Path) -> None:
    engine = engine_for(tmp_path, SSH_RULES)
    five = [ssh("failure", ts=at(i * 5)) for i in range(5)]
    assert feed(engine, five) == []  # the base rules do not alert (generate: false)
    alerts = feed(engine, [ssh("failure", ts=at(30))])
    assert titles(alerts) == ["SSH brute force"]
    alert = alerts[0]
    assert len(alert["sisguard"]["alert"]["event_ids"]) == 6
    assert alert["threat"]["technique"]["id"] == ["T1110.001"]
    assert alert["host"] == {"name": "web1"}


def test_failures_spread_over_more_than_60s_or_addresses_do_not_count(tmp_path: Path) -> None:
    engine = engine_for(tmp_path, SSH_RULES)
    slow = [ssh("failure", ts=at(i * 15)) for i in range(6)]  # 75 s for six
    assert feed(engine, slow) == []
    engine = engine_for(tmp_path, SSH_RULES)
    spread = [ssh("failure", source_ip=f"198.51.100.{i}", ts=at(i)) for i in range(6)]
    assert feed(engine, spread) == []
    engine = engine_for(tmp_path, SSH_RULES)
    hosts = [ssh("failure", host=f"web{i % 2}", ts=at(i)) for i in range(6)]
    assert feed(engine, hosts) == []


def test_success_within_5_minutes_after_burst(tmp_path: Path) -> None:
    engine = engine_for(tmp_path, SSH_RULES)
    burst = [ssh("failure", ts=at(i)) for i in range(6)]
    assert titles(feed(engine, burst)) == ["SSH brute force"]
    other = feed(engine, [ssh("success", source_ip="192.0.2.1", ts=at(60))])
    assert other == []
    alerts = feed(engine, [ssh("success", ts=at(200))])
    assert titles(alerts) == ["SSH login after brute force"]
    assert len(alerts[0]["sisguard"]["alert"]["event_ids"]) == 7


def test_success_too_late_or_before_burst_does_not_alert(tmp_path: Path) -> None:
    engine = engine_for(tmp_path, SSH_RULES)
    feed(engine, [ssh("success", ts=at(0))])
    assert titles(feed(engine, [ssh("failure", ts=at(1 + i)) for i in range(6)])) == [
        "SSH brute force"]
    assert feed(engine, [ssh("success", ts=at(7 + 301))]) == []


def test_value_count_and_temporal(tmp_path: Path) -> None:
    text = SSH_RULES.split("---\ntitle: SSH brute force")[0] + """---
title: Password spraying
id: 5a1d0000-0000-0000-0000-000000000005
correlation:
    type: value_count
    rules: [ssh_failed]
    group-by: [SourceIp]
    timespan: 10m
    condition:
        field: user.name
        gte: 3
---
title: Fail and success
id: 5a1d0000-0000-0000-0000-000000000006
correlation:
    type: temporal
    rules: [ssh_failed, ssh_success]
    group-by: [SourceIp]
    timespan: 1m
"""
    engine = engine_for(tmp_path, text)
    same_user = [ssh("failure", ts=at(i)) for i in range(5)]
    assert "Password spraying" not in titles(feed(engine, same_user))
    users = [ssh("failure", ts=at(10 + i), user={"name": f"u{i}"}) for i in range(2)]
    assert "Password spraying" in titles(feed(engine, users))
    # temporal: order does not matter
    engine = engine_for(tmp_path, text)
    assert titles(feed(engine, [ssh("success", ts=at(0)), ssh("failure", ts=at(30))])) == [
        "Fail and success"]


def test_state_is_bounded_and_expires(tmp_path: Path) -> None:
    result = load_text(tmp_path, SSH_RULES)
    engine = DetectionEngine(result, max_groups=10, max_events=4)
    feed(engine, [ssh("failure", source_ip=f"10.0.0.{i}", ts=at(i)) for i in range(50)])
    stats = engine.stats()["correlations"]["5a1d0000-0000-0000-0000-000000000003"]
    assert stats["groups"] <= 10 and stats["evicted_groups"] >= 40
    # much later: old groups expire
    feed(engine, [ssh("failure", source_ip="10.9.9.9", ts=at(10_000))])
    stats = engine.stats()["correlations"]["5a1d0000-0000-0000-0000-000000000003"]
    assert stats["groups"] == 1


def test_correlation_state_survives_reload_of_unchanged_rule(tmp_path: Path) -> None:
    result = load_text(tmp_path, SSH_RULES)
    engine = DetectionEngine(result)
    feed(engine, [ssh("failure", ts=at(i)) for i in range(5)])
    engine.replace(load_text(tmp_path, SSH_RULES))
    assert titles(feed(engine, [ssh("failure", ts=at(6))])) == ["SSH brute force"]


def test_unknown_reference_is_an_error(tmp_path: Path) -> None:
    result = load_text(tmp_path, """
title: Broken
id: 5a1d0000-0000-0000-0000-000000000009
correlation:
    type: event_count
    rules: [nothing_here]
    timespan: 1m
    condition: {gte: 2}
""")
    assert any("nothing_here" in e.message and e.where.line == 2 for e in result.errors)
