"""Helpers: write rules into a temp dir, build engines, make sisguard events."""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from itertools import count
from pathlib import Path
from typing import Any

import pytest

from collector.detection import DetectionEngine, load_rules
from collector.detection.rules import LoadResult

_ids = count(1)

RuleWriter = Callable[..., Path]


@pytest.fixture
def write_rule(tmp_path: Path) -> RuleWriter:
    def write(text: str, name: str | None = None, directory: str = "rules") -> Path:
        folder = tmp_path / directory
        folder.mkdir(exist_ok=True)
        path = folder / (name or f"rule{next(_ids)}.yml")
        path.write_text(textwrap.dedent(text), encoding="utf-8")
        return path
    return write


def load_text(tmp_path: Path, text: str, *, filters: str | None = None) -> LoadResult:
    rules = tmp_path / f"rules{next(_ids)}"
    rules.mkdir()
    (rules / f"r{next(_ids)}.yml").write_text(textwrap.dedent(text), encoding="utf-8")
    filter_paths: list[Path] = []
    if filters is not None:
        fdir = tmp_path / f"filters{next(_ids)}"
        fdir.mkdir()
        (fdir / f"f{next(_ids)}.yml").write_text(textwrap.dedent(filters), encoding="utf-8")
        filter_paths = [fdir]
    return load_rules([rules], filters=filter_paths)


def engine_for(tmp_path: Path, text: str, *, filters: str | None = None) -> DetectionEngine:
    result = load_text(tmp_path, text, filters=filters)
    assert not result.errors, [str(e) for e in result.errors]
    return DetectionEngine(result)


def rule(detection: str, logsource: str = "product: linux\n    category: process_creation",
         *, extra: str = "") -> str:
    body = textwrap.indent(textwrap.dedent(detection).strip(), "    ")
    return (f"title: Test rule\nid: 11111111-1111-1111-1111-{next(_ids):012d}\n"
            f"level: high\nlogsource:\n    {logsource}\ndetection:\n{body}\n{extra}")


def _event(dataset: str, action: str, types: list[str], **fields: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "@timestamp": fields.pop("ts", "2026-01-01T00:00:00Z"),
        "event": {"id": fields.pop("eid", f"agent-1-{next(_ids)}"), "dataset": dataset,
                  "action": action, "type": types, "module": "sisguard"},
        "host": {"name": fields.pop("host", "web1")},
        "agent": {"id": "agent-1"},
    }
    doc.update(fields)
    return doc


def proc(command_line: str = "ls -la", executable: str = "/usr/bin/ls",
         **fields: Any) -> dict[str, Any]:
    process = {"executable": executable, "command_line": command_line,
               "name": executable.rsplit("/", 1)[-1], "pid": 100}
    process.update(fields.pop("process", {}))
    return _event("sisguard.process", "exec", ["start"], process=process, **fields)


def fim(action: str, path: str, **fields: Any) -> dict[str, Any]:
    types = {"created": ["creation"], "deleted": ["deletion"]}.get(action, ["change"])
    return _event("sisguard.fim", action, types, file={"path": path}, **fields)


def net(domain: str = "example.org", ip: str = "93.184.216.34", port: int | str | float = 443,
        **fields: Any) -> dict[str, Any]:
    return _event("sisguard.network", "outbound_connection", ["connection", "start"],
                  destination={"domain": domain, "ip": ip, "port": port},
                  network={"direction": "egress", "transport": "tcp"},
                  process={"executable": "/usr/bin/curl"}, **fields)


def ssh(outcome: str, source_ip: str = "203.0.113.9", **fields: Any) -> dict[str, Any]:
    line = (f"{'Accepted' if outcome == 'success' else 'Failed'} password for root "
            f"from {source_ip} port 2222 ssh2")
    base: dict[str, Any] = {"source": {"ip": source_ip}, "user": {"name": "root"},
                            "process": {"name": "sshd"}, "message": line}
    doc = _event("sisguard.auth", "ssh_login", ["start"], **{**base, **fields})
    doc["event"]["outcome"] = outcome
    doc["event"]["category"] = ["authentication"]
    return doc
