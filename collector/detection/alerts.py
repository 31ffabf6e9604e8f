"""Alert documents (ECS, ``event.kind: alert``) for rule matches and correlations."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import Any

from collector.detection.rules import RuleMeta

# Sigma level -> event.severity, as Elastic's detection rules score them.
SEVERITY = {"informational": 1, "low": 21, "medium": 47, "high": 73, "critical": 99}

TACTICS = {
    "reconnaissance": ("TA0043", "Reconnaissance"),
    "resource-development": ("TA0042", "Resource Development"),
    "initial-access": ("TA0001", "Initial Access"),
    "execution": ("TA0002", "Execution"),
    "persistence": ("TA0003", "Persistence"),
    "privilege-escalation": ("TA0004", "Privilege Escalation"),
    "defense-evasion": ("TA0005", "Defense Evasion"),
    "credential-access": ("TA0006", "Credential Access"),
    "discovery": ("TA0007", "Discovery"),
    "lateral-movement": ("TA0008", "Lateral Movement"),
    "collection": ("TA0009", "Collection"),
    "exfiltration": ("TA0010", "Exfiltration"),
    "command-and-control": ("TA0011", "Command and Control"),
    "impact": ("TA0040", "Impact"),
}

COPIED_FIELDS = ("host", "agent", "organization")
# What a single-event alert carries of its event, so that an analyst sees what happened
# (as Elastic Security alerts carry their source fields). A correlation alert carries
# only its group-by fields: every event of the group shares those, not the others.
CONTEXT_FIELDS = ("file", "process", "user", "group", "source", "destination", "server",
                  "client", "network", "package", "log", "error")
EVENT_CONTEXT = ("category", "type", "action", "outcome")


def event_id_of(event: Mapping[str, Any]) -> str:
    """The event's ``event.id``; for an event without one, a hash of its content."""
    meta = event.get("event")
    value = meta.get("id") if isinstance(meta, dict) else event.get("event.id")
    if isinstance(value, str | int) and not isinstance(value, bool):
        return str(value)
    blob = json.dumps(event, sort_keys=True, default=str, separators=(",", ":"))
    return "sha256:" + hashlib.sha256(blob.encode()).hexdigest()


def alert_id(rule_id: str, event_ids: Sequence[str]) -> str:
    """Stable: the same rule on the same events gives the same id."""
    blob = "\n".join([rule_id, *sorted(event_ids)])
    return hashlib.sha256(blob.encode()).hexdigest()


def threat_of(tags: Sequence[str]) -> dict[str, Any] | None:
    techniques: list[str] = []
    tactic_ids: list[str] = []
    tactic_names: list[str] = []
    for tag in tags:
        namespace, _, name = tag.partition(".")
        if namespace != "attack":
            continue
        name = name.lower()
        if name[:1] == "t" and name[1:5].isdigit():
            techniques.append(name.upper())
            continue
        tactic = TACTICS.get(name.replace("_", "-"))
        if tactic is not None and tactic[0] not in tactic_ids:
            tactic_ids.append(tactic[0])
            tactic_names.append(tactic[1])
    if not techniques and not tactic_ids:
        return None
    threat: dict[str, Any] = {"framework": "MITRE ATT&CK"}
    if techniques:
        threat["technique"] = {"id": techniques}
    if tactic_ids:
        threat["tactic"] = {"id": tactic_ids, "name": tactic_names}
    return threat


_STATIC_LIMIT = 100_000
# id(meta) -> (meta, rule fields, threat, severity, level): what an alert says about a rule.
_STATIC: dict[int, tuple[RuleMeta, dict[str, Any], dict[str, Any] | None, int, str]] = {}


def _static(meta: RuleMeta) -> tuple[RuleMeta, dict[str, Any], dict[str, Any] | None, int, str]:
    entry = _STATIC.get(id(meta))
    if entry is not None and entry[0] is meta:
        return entry
    rule: dict[str, Any] = {"id": meta.id, "name": meta.title, "ruleset": meta.ruleset}
    if meta.description:
        rule["description"] = meta.description
    if meta.references:
        rule["reference"] = list(meta.references)
    if meta.version:
        rule["version"] = meta.version
    level = meta.level or "medium"
    entry = (meta, rule, threat_of(meta.tags), SEVERITY.get(level, SEVERITY["medium"]), level)
    if len(_STATIC) >= _STATIC_LIMIT:
        _STATIC.clear()
    _STATIC[id(meta)] = entry
    return entry


_PLAIN = frozenset({str, int, float, bool, type(None)})
_MAX_DEPTH = 64


def json_copy(value: Any, depth: int = 0) -> Any:
    """``json.loads(json.dumps(value, default=str))``, without the text in between."""
    cls = value.__class__
    if cls in _PLAIN:
        return value
    if depth < _MAX_DEPTH:
        if cls is dict:
            out: dict[str, Any] = {}
            for key, item in value.items():
                if key.__class__ is not str:
                    break
                out[key] = item if item.__class__ in _PLAIN else json_copy(item, depth + 1)
            else:
                return out
        elif cls is list:
            return [item if item.__class__ in _PLAIN else json_copy(item, depth + 1)
                    for item in value]
    return json.loads(json.dumps(value, default=str))


def _copy_threat(threat: dict[str, Any]) -> dict[str, Any]:
    """A fresh copy of a threat_of() result (str values, or dicts of lists of str)."""
    return {key: {k: list(v) for k, v in value.items()} if value.__class__ is dict else value
            for key, value in threat.items()}


def _context(doc: dict[str, Any], event: Mapping[str, Any]) -> None:
    for name in CONTEXT_FIELDS:
        value = event.get(name)
        if isinstance(value, dict):
            doc[name] = json_copy(value)
    source_meta = event.get("event")
    if isinstance(source_meta, dict):
        for name in EVENT_CONTEXT:
            if name in source_meta:
                doc["event"][name] = json_copy(source_meta[name])
    ours = event.get("sisguard")
    if isinstance(ours, dict):
        for key, value in ours.items():
            if key != "alert":
                doc["sisguard"][key] = json_copy(value)


def _group_fields(doc: dict[str, Any], event: Mapping[str, Any], paths: Sequence[str]) -> None:
    for path in paths:
        node: Any = event
        for part in path.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        if node is None or isinstance(node, dict):
            continue
        target = doc
        *parents, leaf = path.split(".")
        for part in parents:
            nxt = target.setdefault(part, {})
            if not isinstance(nxt, dict):
                break
            target = nxt
        else:
            target.setdefault(leaf, json_copy(node))


def build_alert(meta: RuleMeta, last_event: Mapping[str, Any], event_ids: Sequence[str],
                *, correlation: str | None = None,
                group_paths: Sequence[str] = ()) -> dict[str, Any]:
    _, rule_static, threat, severity, level = _static(meta)
    rule = dict(rule_static)
    if "reference" in rule:
        rule["reference"] = list(rule["reference"])
    alert_meta: dict[str, Any] = {"level": level, "event_ids": list(event_ids)}
    if correlation is not None:
        alert_meta["correlation"] = correlation
    doc: dict[str, Any] = {
        "@timestamp": last_event.get("@timestamp"),
        "event": {
            "kind": "alert",
            "id": alert_id(meta.id, event_ids),
            "severity": severity,
            "module": "sisguard",
            "dataset": "sisguard.alert",
        },
        "message": meta.title,
        "rule": rule,
        "sisguard": {"alert": alert_meta},
    }
    source_meta = last_event.get("event")
    ingested = source_meta.get("ingested") if source_meta.__class__ is dict else None
    if ingested.__class__ is str:  # the day it is filed under (outputs/days.py)
        doc["event"]["ingested"] = ingested
    if threat is not None:
        doc["threat"] = _copy_threat(threat)
    if meta.tags:
        doc["tags"] = list(meta.tags)
    for name in COPIED_FIELDS:
        value = last_event.get(name)
        if isinstance(value, dict):
            doc[name] = json_copy(value)
    if correlation is None:
        _context(doc, last_event)
    else:
        _group_fields(doc, last_event, group_paths)
    return doc
