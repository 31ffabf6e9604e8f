"""ArcSight Common Event Format (CEF 0) for a record: the SIEMs of the SOCs read it.

``CEF:0|vendor|product|version|signature id|name|severity|key=value key=value ...``

Escaping (the CEF specification, "Character Encoding"): in the seven header fields
``\\`` becomes ``\\\\`` and ``|`` becomes ``\\|``; in extension values ``\\``, ``=``,
and line breaks (``\\n``, ``\\r``) are escaped. Header fields cannot hold line breaks:
they become spaces; other control characters become spaces everywhere. So an attacker's
``|`` or ``=`` or newline in a URL or a file name can never start a field, a key or a
message of its own. docs/export.md has the mapping table.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_HEADER_LIMIT = 1023         # characters of a header field (ArcSight's own limit)


@dataclass(frozen=True)
class CefConfig:
    vendor: str = "sisguard"
    product: str = "sisguard"
    version: str = "1"
    max_value_chars: int = 4000   # of one extension value; longer ones are cut ("...")

    def __post_init__(self) -> None:
        if self.max_value_chars < 16:
            raise TypeError("max_value_chars must be at least 16")


def escape_header(value: str) -> str:
    value = value.replace("\\", "\\\\").replace("|", "\\|")
    return _CONTROL.sub(" ", value)[:_HEADER_LIMIT]


def escape_value(value: str) -> str:
    value = (value.replace("\\", "\\\\").replace("=", "\\=")
             .replace("\r\n", "\\n").replace("\n", "\\n").replace("\r", "\\r"))
    return _CONTROL.sub(" ", value)


def cef_severity(severity: Any) -> int:
    """ECS ``event.severity`` (0-100, sisguard's Sigma levels) -> CEF 0-10."""
    if not isinstance(severity, int) or isinstance(severity, bool):
        return 0
    return max(0, min(10, (severity + 5) // 10))


def _get(doc: Mapping[str, Any], path: str) -> Any:
    node: Any = doc
    for part in path.split("."):
        if not isinstance(node, Mapping):
            return None
        node = node.get(part)
    return node


def _text(value: Any) -> str | None:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (str, int, float)):
        return str(value)
    if isinstance(value, list) and value and all(isinstance(v, (str, int)) for v in value):
        return ",".join(str(v) for v in value)
    return None


def _port(value: Any) -> str | None:
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 65535:
        return str(value)
    return None


def _ip(value: Any) -> str | None:
    if not isinstance(value, str):
        return None
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        return None


def _int(value: Any) -> str | None:
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else None


def _millis(value: Any) -> str | None:
    if not isinstance(value, str):
        return None
    try:
        when = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return str(int(when.timestamp() * 1000))


# CEF key <- ECS field, with the check its value must pass (docs/export.md lists them)
MAPPING: tuple[tuple[str, str, Callable[[Any], str | None]], ...] = (
    ("rt", "@timestamp", _millis),
    ("msg", "message", _text),
    ("cat", "event.dataset", _text),
    ("act", "event.action", _text),
    ("outcome", "event.outcome", _text),
    ("dvchost", "host.name", _text),
    ("deviceExternalId", "agent.id", _text),
    ("src", "source.ip", _ip),
    ("spt", "source.port", _port),
    ("dst", "destination.ip", _ip),
    ("dpt", "destination.port", _port),
    ("suser", "user.name", _text),
    ("duser", "user.target.name", _text),
    ("fname", "file.name", _text),
    ("filePath", "file.path", _text),
    ("fileHash", "file.hash.sha256", _text),
    ("fsize", "file.size", _int),
    ("sproc", "process.name", _text),
    ("spid", "process.pid", _int),
    ("request", "url.original", _text),
    ("requestMethod", "http.request.method", _text),
    ("requestClientApplication", "user_agent.original", _text),
)
# custom strings and numbers, each with its label
CUSTOM: tuple[tuple[str, str, str, Callable[[Any], str | None]], ...] = (
    ("cs1", "commandLine", "process.command_line", _text),
    ("cs2", "organization", "organization.name", _text),
    ("cs3", "ruleId", "rule.id", _text),
    ("cs4", "tactic", "threat.tactic.name", _text),
    ("cs5", "technique", "threat.technique.id", _text),
    ("cs6", "alertLevel", "sisguard.alert.level", _text),
    ("cn1", "ecsSeverity", "event.severity", _int),
)


def format_cef(doc: Mapping[str, Any], *, doc_id: str, kind: str, config: CefConfig) -> str:
    """One CEF line (no line break in it) for a document."""
    rule_name = _get(doc, "rule.name")
    if kind == "alerts":
        signature = _text(_get(doc, "rule.id")) or "alert"
        name = _text(rule_name) or _text(doc.get("message")) or "sisguard alert"
    else:
        dataset = _text(_get(doc, "event.dataset")) or "event"
        action = _text(_get(doc, "event.action"))
        signature = f"{dataset}:{action}" if action else dataset
        name = _text(doc.get("message")) or signature
    header = [
        "CEF:0", escape_header(config.vendor), escape_header(config.product),
        escape_header(config.version), escape_header(signature), escape_header(name),
        str(cef_severity(_get(doc, "event.severity"))),
    ]
    limit = config.max_value_chars
    pairs: list[tuple[str, str]] = [("externalId", doc_id)]
    for key, path, check in MAPPING:
        value = check(_get(doc, path))
        if value is not None:
            pairs.append((key, value))
    for key, label, path, check in CUSTOM:
        value = check(_get(doc, path))
        if value is not None:
            pairs.append((key + "Label", label))
            pairs.append((key, value))
    extension = " ".join(
        f"{key}={escape_value(value if len(value) <= limit else value[:limit - 3] + '...')}"
        for key, value in pairs)
    return "|".join(header) + "|" + extension


def parse_cef(line: str) -> tuple[list[str], dict[str, str]]:
    """Header fields and extension of a CEF line, unescaped (tests and troubleshooting:
    what a SIEM's parser would make of it)."""
    header: list[str] = []
    field_chars: list[str] = []
    i = 0
    while len(header) < 7:
        if i >= len(line):
            raise ValueError("CEF line ends inside its header")
        c = line[i]
        if c == "\\" and i + 1 < len(line) and line[i + 1] in "\\|":
            field_chars.append(line[i + 1])
            i += 2
            continue
        if c == "|":
            header.append("".join(field_chars))
            field_chars = []
        else:
            field_chars.append(c)
        i += 1
    rest = line[i:]
    extension: dict[str, str] = {}
    # a key starts after an unescaped space and ends at the next unescaped '='
    tokens = re.finditer(r"(?:^| )([A-Za-z0-9_]+)=((?:\\.|[^\\=])*?)(?= [A-Za-z0-9_]+=|$)",
                         rest)
    unescape = {"\\\\": "\\", "\\=": "=", "\\n": "\n", "\\r": "\r"}
    for match in tokens:
        value = re.sub(r"\\[\\=nr]", lambda m: unescape[m.group(0)], match.group(2))
        extension[match.group(1)] = value
    return header, extension
