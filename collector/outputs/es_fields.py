"""Every field sisguard emits, with its Elasticsearch type: the index templates' source.

ECS fields carry their ECS type (tests/collector/test_es_fields.py checks each one
against ECS's own field list), with two deliberate substitutions so that the templates
work on every Elasticsearch and OpenSearch version without paid features or extra
plugins: ECS ``wildcard`` -> ``keyword`` and ECS ``match_only_text`` -> ``text`` (the
same family; queries written for ECS work unchanged). Our own fields live under
``sisguard.*``. Fields that are not listed are kept in ``_source`` but not indexed
(``dynamic: false``), so an unexpected field can never break a mapping.
"""

from __future__ import annotations

from typing import Any

K, D, L, IP, B, T, F = "keyword", "date", "long", "ip", "boolean", "text", "float"

ECS_FIELDS: dict[str, str] = {
    "@timestamp": D, "message": T, "tags": K, "labels": "object",
    "ecs.version": K,
    # event
    "event.kind": K, "event.category": K, "event.type": K, "event.action": K,
    "event.outcome": K, "event.module": K, "event.dataset": K, "event.id": K,
    "event.sequence": L, "event.ingested": D, "event.created": D, "event.original": K,
    "event.severity": L, "event.risk_score": F, "event.reason": K, "event.code": K,
    "event.provider": K, "event.start": D, "event.end": D, "event.duration": L,
    # agent, host, organization
    "agent.id": K, "agent.name": K, "agent.type": K, "agent.version": K,
    "host.name": K, "host.hostname": K, "host.id": K, "host.ip": IP, "host.mac": K,
    "host.architecture": K, "host.boot.id": K, "host.uptime": L,
    "host.os.name": K, "host.os.full": K, "host.os.family": K, "host.os.version": K,
    "host.os.kernel": K, "host.os.platform": K, "host.os.type": K,
    "organization.name": K, "organization.id": K,
    # file
    "file.path": K, "file.name": K, "file.directory": K, "file.extension": K,
    "file.type": K, "file.size": L, "file.mode": K, "file.uid": K, "file.gid": K,
    "file.owner": K, "file.group": K, "file.inode": K, "file.mtime": D, "file.ctime": D,
    "file.accessed": D, "file.created": D, "file.attributes": K, "file.target_path": K,
    "file.mime_type": K, "file.device": K,
    "file.hash.sha256": K, "file.hash.sha1": K, "file.hash.md5": K, "file.hash.sha512": K,
    # process
    "process.pid": L, "process.name": K, "process.executable": K, "process.args": K,
    "process.args_count": L, "process.command_line": K, "process.working_directory": K,
    "process.start": D, "process.end": D, "process.entity_id": K, "process.exit_code": L,
    "process.title": K, "process.hash.sha256": K, "process.interactive": B,
    "process.user.id": K, "process.user.name": K,
    "process.parent.pid": L, "process.parent.name": K, "process.parent.executable": K,
    "process.parent.command_line": K, "process.parent.entity_id": K,
    "process.parent.args": K, "process.parent.start": D,
    # users and groups
    "user.name": K, "user.id": K, "user.full_name": K, "user.domain": K,
    "user.group.id": K, "user.group.name": K, "user.roles": K,
    "user.effective.name": K, "user.effective.id": K,
    "user.target.name": K, "user.target.id": K,
    "group.name": K, "group.id": K,
    # network
    "source.ip": IP, "source.port": L, "source.address": K, "source.domain": K,
    "destination.ip": IP, "destination.port": L, "destination.address": K,
    "destination.domain": K,
    "server.ip": IP, "server.port": L, "server.address": K,
    "client.ip": IP, "client.port": L,
    "network.transport": K, "network.type": K, "network.direction": K,
    "network.protocol": K, "network.iana_number": K,
    # packages
    "package.name": K, "package.version": K, "package.architecture": K,
    "package.type": K, "package.size": L, "package.installed": D, "package.description": K,
    # web (sisguard.web)
    "url.original": K, "url.path": K, "url.query": K, "url.extension": K,
    "http.request.method": K, "http.request.referrer": K, "http.request.mime_type": K,
    "http.response.status_code": L, "http.response.body.bytes": L, "http.version": K,
    "user_agent.original": K,
    # log, error
    "log.file.path": K, "log.level": K, "log.syslog.appname": K, "log.syslog.hostname": K,
    "log.syslog.procid": K,
    "error.message": T, "error.type": K, "error.code": K,
    # rules and threat intel (alerts)
    "rule.id": K, "rule.name": K, "rule.description": K, "rule.reference": K,
    "rule.ruleset": K, "rule.version": K, "rule.author": K, "rule.category": K,
    "rule.uuid": K, "rule.license": K,
    "threat.framework": K, "threat.tactic.id": K, "threat.tactic.name": K,
    "threat.tactic.reference": K, "threat.technique.id": K, "threat.technique.name": K,
    "threat.technique.reference": K, "threat.technique.subtechnique.id": K,
    "threat.technique.subtechnique.name": K,
}

SISGUARD_FIELDS: dict[str, str] = {
    # alerts
    "sisguard.alert.level": K, "sisguard.alert.event_ids": K, "sisguard.alert.count": L,
    "sisguard.alert.correlation": K, "sisguard.alert.group": "stored",
    "sisguard.alert.rule_path": K,
    # fim
    "sisguard.fim.changed": K, "sisguard.fim.diff": T, "sisguard.fim.web_root": B,
    "sisguard.fim.scan": K, "sisguard.fim.before.path": K, "sisguard.fim.before.size": L,
    "sisguard.fim.before.mode": K, "sisguard.fim.before.uid": K,
    "sisguard.fim.before.gid": K, "sisguard.fim.before.owner": K,
    "sisguard.fim.before.group": K, "sisguard.fim.before.mtime": D,
    "sisguard.fim.before.inode": K, "sisguard.fim.before.type": K,
    "sisguard.fim.before.hash.sha256": K, "sisguard.fim.before.hash.sha1": K,
    "sisguard.fim.before.hash.md5": K, "sisguard.fim.before.hash.sha512": K,
    "sisguard.fim.before.xattrs": K,
    "sisguard.fim.detected_by": K, "sisguard.fim.quarantine_path": K,
    "sisguard.fim.hash_skipped": K, "sisguard.fim.diff_skipped": K,
    "sisguard.fim.content_capped": K,
    "sisguard.content.signatures": K, "sisguard.content.categories": K,
    "sisguard.content.excerpt": T,
    # YARA matches (agent/sensors/fim/yara_rules.py): one object per rule that matched
    "sisguard.content.yara.rule": K, "sisguard.content.yara.namespace": K,
    "sisguard.content.yara.tags": K, "sisguard.content.yara_error": K,
    # auth
    "sisguard.auth.method": K, "sisguard.auth.invalid_user": B, "sisguard.auth.repeated": L,
    "sisguard.auth.tty": K, "sisguard.auth.reason": K, "sisguard.auth.attempts": L,
    # web
    "sisguard.web.format": K, "sisguard.web.server": K, "sisguard.web.parse_error": B,
    "sisguard.web.truncated": B, "sisguard.web.bad_request_line": B,
    "sisguard.web.root": K,   # the document root file.path was resolved under
    # process, network, inventory
    "sisguard.process.gone_before_read": B, "sisguard.network.initial": B,
    "sisguard.network.suppressed": L, "sisguard.sensor.max_sockets": L,
    "sisguard.process.hash_error": K, "sisguard.process.found_by": K,
    "sisguard.inventory.boot_time": D, "sisguard.inventory.change": K,
    "sisguard.inventory.members": K, "sisguard.inventory.home": K,
    "sisguard.inventory.shell": K,
    # agent health, spool
    "sisguard.spool.dropped": L, "sisguard.spool.dropped_total": L,
    "sisguard.spool.max_bytes": L, "sisguard.spool.where": K, "sisguard.sensor.name": K,
    # sensor_error details: why, and how much was lost (process floods, inotify overflows)
    "sisguard.sensor.reason": K, "sisguard.sensor.overflows": L,
    "sisguard.sensor.overflows_total": L, "sisguard.sensor.overruns": L,
    "sisguard.sensor.overruns_total": L, "sisguard.sensor.queue_dropped": L,
    "sisguard.sensor.queue_dropped_total": L, "sisguard.sensor.found_by_sweep": L,
    "sisguard.sensor.found_by_sweep_total": L,
    "sisguard.agent.status": K, "sisguard.agent.last_seen": D,
    # upstream export: the queue-full alert (outputs/forwarder.py), a cut syslog message
    "sisguard.export.output": K, "sisguard.export.dropped": L,
    "sisguard.export.dropped_total": L, "sisguard.export.max_bytes": L,
    "sisguard.export.truncated": B, "sisguard.export.bytes": L,
    # detection: @timestamp minus event.ingested, seconds, when beyond the trusted skew
    "sisguard.time_skew": "double",
    # dead letters
    "sisguard.deadletter.reason": T, "sisguard.deadletter.index": K,
    "sisguard.deadletter.id": K, "sisguard.deadletter.status": L,
    "sisguard.deadletter.document": T,
    # what the collector did to an agent's document (collector/decoding.py, sequence.py)
    "sisguard.stripped": K, "sisguard.sequence_anomaly.kinds": K,
    "sisguard.sequence_anomaly.first": K, "sisguard.sequence_anomaly.mark": K,
    "sisguard.sequence_anomaly.refused": L,
}

ALL_FIELDS: dict[str, str] = {**ECS_FIELDS, **SISGUARD_FIELDS}

# keyword fields longer than this are kept in _source but not indexed (ECS' own limit)
IGNORE_ABOVE = 1024
# ... except these, where long values are the point
LONG_KEYWORDS = {"event.original": 32766, "process.command_line": 32766,
                 "process.parent.command_line": 32766, "sisguard.alert.event_ids": 1024,
                 "url.original": 32766, "url.query": 32766, "user_agent.original": 8191}
# text fields with a keyword sub-field for aggregations
TEXT_WITH_KEYWORD = {"message", "error.message"}
# searched as text too (ECS multi-fields)
KEYWORD_WITH_TEXT = {"file.path", "process.command_line", "process.executable",
                     "process.parent.command_line", "user.name", "event.original"}


def properties() -> dict[str, Any]:
    """The nested ``properties`` mapping for every field."""
    root: dict[str, Any] = {}
    for name, kind in sorted(ALL_FIELDS.items()):
        node = root
        parts = name.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {"properties": {}})["properties"]
        node[parts[-1]] = _mapping(name, kind)
    return root


def _mapping(name: str, kind: str) -> dict[str, Any]:
    if kind == "object":
        return {"type": "object", "dynamic": True}
    if kind == "stored":  # kept in _source, not indexed: any shape is fine
        return {"type": "object", "enabled": False}
    mapping: dict[str, Any] = {"type": kind}
    if kind == "keyword":
        mapping["ignore_above"] = LONG_KEYWORDS.get(name, IGNORE_ABOVE)
        if name in KEYWORD_WITH_TEXT:
            mapping["fields"] = {"text": {"type": "text"}}
    if kind == "text" and name in TEXT_WITH_KEYWORD:
        mapping["fields"] = {"keyword": {"type": "keyword", "ignore_above": IGNORE_ABOVE}}
    if name == "sisguard.deadletter.document":
        mapping["index"] = False
    return mapping
