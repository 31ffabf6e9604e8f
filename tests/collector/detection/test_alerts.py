"""What an alert tells the analyst about the events behind it."""

from __future__ import annotations

from pathlib import Path

from tests.collector.detection.detection_helpers import engine_for, fim, rule, ssh
from tests.collector.detection.test_correlation import SSH_RULES, at, feed

WEB_SHELL = rule("""
    sel:
        file.path|endswith: .php
    condition: sel
    """, logsource="product: sisguard\n    service: fim")


def test_single_event_alert_carries_what_happened(tmp_path: Path) -> None:
    engine = engine_for(tmp_path, WEB_SHELL)
    event = fim("created", "/var/www/html/up/x.php",
                sisguard={"content": {"categories": ["webshell"]}})
    (alert,) = engine.process(event)
    assert alert["file"]["path"] == "/var/www/html/up/x.php"
    assert alert["event"]["action"] == "created"
    assert alert["event"]["kind"] == "alert"          # the alert's own kind is kept
    assert alert["sisguard"]["content"] == {"categories": ["webshell"]}
    assert alert["sisguard"]["alert"]["event_ids"] == [event["event"]["id"]]
    alert["file"]["path"] = "changed"                # a copy, not the event itself
    assert event["file"]["path"] == "/var/www/html/up/x.php"


def test_correlation_alert_carries_its_group_by_fields_only(tmp_path: Path) -> None:
    engine = engine_for(tmp_path, SSH_RULES)
    failures = [ssh("failure", ts=at(i * 5), user={"name": f"u{i}"}) for i in range(6)]
    (alert,) = feed(engine, failures)
    assert alert["source"] == {"ip": "203.0.113.9"}   # the group: same in all six events
    assert alert["host"]["name"] == "web1"
    assert "user" not in alert                        # differs per event: not copied


def test_an_alert_carries_the_organization_of_its_events_never_anothers(
        tmp_path: Path) -> None:
    """Two agencies' hosts fail logins from one address: a correlation groups by agent
    first, so each alert is of one agency, and says so."""
    engine = engine_for(tmp_path, SSH_RULES)
    orgs = {"a1": {"id": "syt", "name": "Sở Y tế"}, "a2": {"id": "stt", "name": "Sở TT&TT"}}
    events = [ssh("failure", ts=at(i * 5), agent={"id": agent}, organization=org)
              for i in range(6) for agent, org in orgs.items()]
    alerts = feed(engine, events)
    assert sorted((a["agent"]["id"], a["organization"]["id"]) for a in alerts) == [
        ("a1", "syt"), ("a2", "stt")]
    assert all(a["organization"] == orgs[a["agent"]["id"]] for a in alerts)
    (single,) = engine_for(tmp_path, WEB_SHELL).process(
        fim("created", "/var/www/x.php", organization=orgs["a1"]))
    assert single["organization"] == orgs["a1"]
