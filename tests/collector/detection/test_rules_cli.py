"""sisguard-rules lint / test / match."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

from collector.rules_cli import main
from tests.collector.detection.detection_helpers import proc, rule, ssh

REPO = Path(__file__).resolve().parents[3]

TESTED = rule("sel:\n    file.path|endswith: '.php'\n    file.path|startswith: '/var/www/'\n"
              "condition: sel", "product: linux\n    category: file_event", extra="""tests:
  - name: php file dropped in web root
    event: {event.dataset: sisguard.fim, event.action: created, file: {path: /var/www/x.php}}
    alerts: 1
  - name: php elsewhere
    event: {event: {dataset: sisguard.fim, action: created}, file: {path: /tmp/x.php}}
    alerts: 0
""")

CORRELATION = """title: SSH login failed
id: 5a1d0000-0000-0000-0000-0000000000aa
name: ssh_failed
logsource: {product: linux, service: sshd}
detection:
  sel: {event.outcome: failure}
  condition: sel
---
title: SSH brute force
id: 5a1d0000-0000-0000-0000-0000000000ab
correlation:
  type: event_count
  rules: [ssh_failed]
  group-by: [source.ip]
  timespan: 60s
  condition: {gt: 5}
tests:
  - name: six failures
    events: [%s]
    alerts: 1
  - name: five failures
    events: [%s]
    alerts: 1
"""


def run(*args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(args), out=out, err=err)
    return code, out.getvalue(), err.getvalue()


def test_lint(tmp_path: Path) -> None:
    (tmp_path / "good.yml").write_text(TESTED)
    (tmp_path / "bad.yml").write_text("title: x\nlevel: huge\nlogsource: {product: linux}\n"
                                      "detection: {sel: {a: 1}, condition: sel}\n")
    code, out, _ = run("lint", str(tmp_path))
    assert code == 1
    assert f"{tmp_path / 'bad.yml'}:2:1:" in out
    assert "1 rules loaded, 1 problems in 1 files" in out
    (tmp_path / "bad.yml").unlink()
    assert run("lint", str(tmp_path))[0] == 0


def test_lint_warns_at_its_line_about_a_regex_re2_cannot_take(tmp_path: Path) -> None:
    (tmp_path / "good.yml").write_text(TESTED)
    (tmp_path / "backref.yml").write_text(rule(
        "sel:\n    CommandLine|re: '(\\w+) \\1'\n    Image|endswith: /sh\ncondition: sel"))
    code, out, _ = run("lint", str(tmp_path))
    assert code == 1
    (line,) = [x for x in out.splitlines() if "backref.yml" in x]
    assert line.startswith(f"{tmp_path / 'backref.yml'}:9:")  # the CommandLine|re line
    assert "RE2 cannot take" in line and "a backreference" in line
    assert "the engine refuses the rule" in line
    assert "1 rules loaded, 1 problems in 1 files" in out


def test_test_reports_failures_with_event_expected_and_actual(tmp_path: Path) -> None:
    (tmp_path / "fim.yml").write_text(TESTED)
    failure = '{event: {dataset: sisguard.auth, outcome: failure}, process: {name: sshd}, ' \
              'source: {ip: 203.0.113.5}}'
    (tmp_path / "ssh.yml").write_text(CORRELATION % (", ".join([failure] * 6),
                                                     ", ".join([failure] * 5)))
    code, out, _ = run("test", str(tmp_path))
    assert code == 1
    assert "3 passed, 1 failed" in out
    assert "five failures" in out and "expected 1 alerts, got 0" in out
    assert '"ip": "203.0.113.5"' in out


def test_match_prints_alerts_in_timestamp_order_and_reports_bad_lines(tmp_path: Path) -> None:
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "ssh.yml").write_text(CORRELATION.split("tests:")[0])
    events = [ssh("failure", ts=f"2026-01-01T00:00:{59 - i:02d}Z") for i in range(6)]
    lines = [json.dumps(e) for e in events]
    lines.insert(2, "{not json")
    lines.append(json.dumps(proc()))
    jsonl = tmp_path / "events.jsonl"
    jsonl.write_text("\n".join(lines) + "\n")
    code, out, err = run("match", "--rules", str(rules), "--events", str(jsonl))
    assert code == 0
    (alert,) = [json.loads(line) for line in out.splitlines()]
    assert alert["rule"]["name"] == "SSH brute force"
    assert alert["@timestamp"] == "2026-01-01T00:00:59Z"  # the latest, since sorted
    assert f"{jsonl}:3: bad JSON" in err


def test_console_entry_point_runs(tmp_path: Path) -> None:
    (tmp_path / "fim.yml").write_text(TESTED)
    done = subprocess.run([sys.executable, "-m", "collector.rules_cli", "test", str(tmp_path)],
                          cwd=REPO, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "2 passed, 0 failed" in done.stdout
