"""SigmaHQ's web server rules load unmodified and fire on our ``sisguard.web`` documents.

The rules are read from the shared reference data (``SHARED/data/sigma/web``); the
documents are built by the agent's own parser from realistic access-log lines.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from agent.sensors.weblog_document import DocumentBuilder
from agent.sensors.weblog_formats import compile_format
from collector.detection import DetectionEngine, load_rules
from tests.harness import SHARED

SIGMA_WEB = SHARED / "data/sigma/web"


def web_rule_files() -> list[Path]:
    if not SIGMA_WEB.is_dir():
        message = f"SigmaHQ web rules not found at {SIGMA_WEB}"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(f"NOT TESTED: {message}")
    return sorted(SIGMA_WEB.rglob("*.yml"))


@pytest.fixture(scope="module")
def engine() -> DetectionEngine:
    return DetectionEngine(load_rules(web_rule_files()))


def test_every_sigmahq_web_rule_loads() -> None:
    files = web_rule_files()
    assert len(files) >= 80
    result = load_rules(files)
    failures = sorted({e.where.path for e in result.errors})
    loaded = len(files) - len(failures)
    print(f"SigmaHQ web: {loaded} of {len(files)} load ({loaded / len(files):.1%})")
    assert failures == [], [str(e) for e in result.errors]


_SEQUENCE = 0


def web_event(line: str, fmt: str = "combined") -> dict[str, Any]:
    global _SEQUENCE
    _SEQUENCE += 1
    compiled = compile_format(fmt)
    doc = DocumentBuilder(compiled, path="/var/log/nginx/access.log").document(
        line, compiled.parse(line))
    doc["event"]["id"] = f"web-{_SEQUENCE}"
    return doc


def fired(engine: DetectionEngine, line: str, fmt: str = "combined") -> set[str]:
    return {a["rule"]["name"] for a in engine.process(web_event(line, fmt))}


def access(request: str, *, status: int = 200, agent: str = "Mozilla/5.0") -> str:
    return (f'203.0.113.9 - - [01/Dec/2026:10:00:00 +0700] "{request}" {status} 512 '
            f'"-" "{agent}"')


def test_sql_injection_fires(engine: DetectionEngine) -> None:
    names = fired(engine, access("GET /news.php?id=1'%20or%20'1'='1 HTTP/1.1"))
    assert "SQL Injection Strings In URI" in names
    # the rule ignores 404s: a miss is not an injection that reached the application
    assert "SQL Injection Strings In URI" not in fired(
        engine, access("GET /news.php?id=1'%20or%20'1'='1 HTTP/1.1", status=404))


def test_path_traversal_fires(engine: DetectionEngine) -> None:
    names = fired(engine, access("GET /download?file=../../../etc/passwd HTTP/1.1"))
    assert "Path Traversal Exploitation Attempts" in names


def test_scanner_user_agent_fires(engine: DetectionEngine) -> None:
    names = fired(engine, access("GET / HTTP/1.1", agent="sqlmap/1.7.2#stable"))
    assert "Suspicious User-Agents Related To Recon Tools" in names


def test_ordinary_requests_fire_nothing(engine: DetectionEngine) -> None:
    for request in ("GET / HTTP/1.1", "GET /static/app.css HTTP/2.0",
                    "POST /login HTTP/1.1", "GET /news.php?id=42&page=2 HTTP/1.1"):
        assert fired(engine, access(request)) == set(), request


def test_json_and_vhost_formats_fire_too(engine: DetectionEngine) -> None:
    line = ('{"remote_addr":"203.0.113.9","time_local":"01/Dec/2026:10:00:00 +0700",'
            '"request":"GET / HTTP/1.1","status":"200","body_bytes_sent":"5",'
            '"http_referer":"","http_user_agent":"Nikto/2.5.0"}')
    assert "Suspicious User-Agents Related To Recon Tools" in fired(engine, line, "json")
    line = ('portal.example:80 203.0.113.9 - - [01/Dec/2026:10:00:00 +0700] '
            '"GET /a?f=../../../etc/passwd HTTP/1.1" 200 5 "-" "curl/8"')
    assert "Path Traversal Exploitation Attempts" in fired(engine, line, "vhost_combined")


def test_keywords_match_a_line_that_does_not_parse(engine: DetectionEngine) -> None:
    # a line our format does not describe is still searched by keyword rules
    line = "garbage GET /Basic/Command/Base64/aWQ= HTTP/1.1 200"
    doc = web_event(line)
    assert doc["sisguard"]["web"]["parse_error"] is True
    assert doc["event"]["original"] == line
    assert "JNDIExploit Pattern" in fired(engine, line)


def test_error_log_keywords_fire_for_their_server(engine: DetectionEngine) -> None:
    line = "2026/12/01 10:00:00 [alert] 1234#0: worker process 99 exited on signal 6 (core dumped)"
    assert "Nginx Core Dump" in fired(engine, line, "nginx_error")
    apache = ("[Tue Dec 01 10:00:00.000000 2026] [core:notice] [pid 77] AH00052: child pid "
              "1234 exit signal Segmentation fault (11)")
    assert "Apache Segmentation Fault" in fired(engine, apache, "apache_error")
    # the service rules are per server: an Apache error log never fires the nginx rule
    assert "Nginx Core Dump" not in fired(engine, line, "apache_error")


def test_a_number_in_a_keyword_list_is_searched_as_text(engine: DetectionEngine) -> None:
    # ProxyLogon's rule lists `- 200` among '|all' keywords: every one must be in the line
    name = "ProxyLogon Reset Virtual Directories Based On IIS Log"
    target = "/ecp/DDI/DDIService.svc/SetObject?schema=Reset&msExchEcpCanary=x&VirtualDirectory"
    line = (f'203.0.113.9 - - [01/Dec/2026:10:00:00 +0700] "POST {target} HTTP/1.1" 200 5 '
            '"-" "$x"')
    assert name in fired(engine, line)
    assert name not in fired(engine, line.replace('" 200 5 ', '" 302 5 '))
