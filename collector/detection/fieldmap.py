"""Sigma taxonomy field names -> the ECS fields of our documents, per log source.

Rules may also name ECS fields directly (``process.executable``, ``message``): a field
name that has a dot, starts with a lower-case letter or ``@`` is used as it is. A
CamelCase name that this table does not know is refused at load time, so a rule never
silently waits for a field that our events do not have.

Computed fields (``Initiated``) have no ECS counterpart; they are derived from the
event by a function in ``COMPUTED`` and named with a leading ``%``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

_PROCESS = {
    "Image": "process.executable",
    "CommandLine": "process.command_line",
    "ParentImage": "process.parent.executable",
    "ParentCommandLine": "process.parent.command_line",
    "ParentProcessId": "process.parent.pid",
    "ProcessId": "process.pid",
    "CurrentDirectory": "process.working_directory",
    "User": "user.name",
    # On Linux (Sysmon for Linux, auditd) LogonId is the login uid: 0 is root.
    "LogonId": "user.id",
    "Hashes": "process.hash.sha256",
    "sha256": "process.hash.sha256",
    "ProcessGuid": "process.entity_id",
    "ParentProcessGuid": "process.parent.entity_id",
    "Computer": "host.hostname",
}

_FILE = {
    "TargetFilename": "file.path",
    "Image": "process.executable",
    "ProcessId": "process.pid",
    "User": "user.name",
    "Computer": "host.hostname",
}

_NETWORK = {
    "Image": "process.executable",
    "ProcessId": "process.pid",
    "User": "user.name",
    "DestinationIp": "destination.ip",
    "DestinationPort": "destination.port",
    "DestinationHostname": "destination.domain",
    "SourceIp": "source.ip",
    "SourcePort": "source.port",
    "SourceHostname": "source.domain",
    "Protocol": "network.transport",
    "Initiated": "%initiated",
    "Computer": "host.hostname",
}

_AUTH = {
    "User": "user.name",
    "TargetUserName": "user.name",
    "TargetUser": "user.effective.name",
    "SourceIp": "source.ip",
    "IpAddress": "source.ip",
    "SourcePort": "source.port",
    "CommandLine": "process.command_line",
    "CurrentDirectory": "process.working_directory",
    "Program": "process.name",
    "Computer": "host.hostname",
}

# SigmaHQ's web server taxonomy (W3C extended log names). SigmaHQ's rules write the whole
# request target under cs-uri-query (e.g. '/wp-admin/' or '../../etc/' there), so it is
# url.original (path and query); cs-uri-stem is the path alone.
_WEB = {
    "cs-method": "http.request.method",
    "cs-uri-query": "url.original",
    "cs-uri-stem": "url.path",
    "cs-uri": "url.original",
    "sc-status": "http.response.status_code",
    "cs-user-agent": "user_agent.original",
    "c-useragent": "user_agent.original",
    "cs-referer": "http.request.referrer",
    "cs-referrer": "http.request.referrer",
    "c-ip": "source.ip",
    "cs-host": "destination.domain",
    "cs-username": "user.name",
    "cs-content-type": "http.request.mime_type",
    "cs-version": "http.version",
    "sc-bytes": "http.response.body.bytes",
    "Computer": "host.hostname",
}

# Keyed by the rule's category, or else its service.
FIELD_MAPS: Mapping[str, Mapping[str, str]] = {
    "process_creation": _PROCESS,
    "file_event": _FILE,
    "file_change": _FILE,
    "file_delete": _FILE,
    "file_rename": {**_FILE, "SourceFilename": "sisguard.fim.before.path"},
    "network_connection": _NETWORK,
    "auth": _AUTH,
    "sshd": _AUTH,
    "sudo": _AUTH,
    "webserver": _WEB,
    "apache": _WEB,
    "nginx": _WEB,
}

# Rules that name only a product get the union (first definition wins).
_GENERIC: dict[str, str] = {}
for _table in (_PROCESS, _FILE, _NETWORK, _AUTH):
    for _name, _ecs in _table.items():
        _GENERIC.setdefault(_name, _ecs)


def _initiated(doc: Mapping[str, Any]) -> Any:
    event = doc.get("event")
    dataset = event.get("dataset") if isinstance(event, dict) else doc.get("event.dataset")
    if dataset != "sisguard.network":
        return MISSING
    # Sysmon's Initiated: the host opened the connection (egress) or accepted it (ingress)
    network = doc.get("network")
    direction = (network.get("direction") if isinstance(network, dict)
                 else doc.get("network.direction"))
    if direction in ("egress", "ingress"):
        return direction == "egress"
    action = event.get("action") if isinstance(event, dict) else doc.get("event.action")
    return action == "outbound_connection"


class _Missing:
    """The value of a field an event does not have."""

    _instance: _Missing | None = None

    def __new__(cls) -> _Missing:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "MISSING"

    def __bool__(self) -> bool:
        return False


MISSING: Any = _Missing()

COMPUTED: Mapping[str, Callable[[Mapping[str, Any]], Any]] = {
    "%initiated": _initiated,
}


class UnknownFieldError(ValueError):
    """A Sigma field name with no ECS counterpart for the rule's log source."""


def field_map_for(category: str | None, service: str | None) -> Mapping[str, str]:
    if category is not None:
        return FIELD_MAPS.get(category, _GENERIC)
    if service is not None:
        return FIELD_MAPS.get(service, _GENERIC)
    return _GENERIC


def is_ecs_name(name: str) -> bool:
    return "." in name or name[:1].islower() or name.startswith("@")


def resolve_field(name: str, mapping: Mapping[str, str]) -> str:
    """The ECS path (or computed-field name) a rule's field name means."""
    mapped = mapping.get(name)
    if mapped is not None:
        return mapped
    if is_ecs_name(name):
        return name
    raise UnknownFieldError(
        f"field '{name}' has no ECS mapping for this log source "
        f"(known: {', '.join(sorted(mapping))}; or name an ECS field such as process.name)")
