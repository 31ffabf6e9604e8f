"""collector/outputs/console.py: alerts only, one line each, every record stored."""

from __future__ import annotations

import io
import json

from collector.outputs.console import ConsoleAlerts
from collector.records import Kind, Outcome, Record


def test_prints_alerts_only_and_stores_everything() -> None:
    alert = {"event": {"id": "a1", "kind": "alert"}, "rule": {"name": "Web Shell"},
             "sisguard": {"alert": {"level": "high"}}, "host": {"name": "web1"},
             "file": {"path": "/var/www/shell.php"}}
    records = [Record(Kind.EVENT, "e1", {"event": {"id": "e1"}}, agent_id="x", seq=1),
               Record(Kind.ALERT, "a1", alert)]
    out = io.StringIO()
    result = ConsoleAlerts(out).publish(records)
    assert result.outcomes == [Outcome.STORED, Outcome.STORED]
    assert out.getvalue() == "ALERT [high] Web Shell host=web1 /var/www/shell.php\n"
    as_json = io.StringIO()
    ConsoleAlerts(as_json, as_json=True, name="screen").publish(records)
    assert [json.loads(line) for line in as_json.getvalue().splitlines()] == [alert]
