"""Which Sigma log sources each kind of sisguard event satisfies: the one table.

A Sigma rule names a log source (``product``, ``category``, ``service``). Our events say
what they are with ``event.dataset``, ``event.type``, ``event.action`` and, for the auth
dataset, ``process.name``, for the web dataset ``sisguard.web.server`` (docs/events.md).
``LOGSOURCES`` below ties the two together; the engine indexes rules by these keys so an
event is only tried against rules whose log source it satisfies.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping
from typing import Any, NamedTuple

# (product, category, service); None means "not specified".
LogsourceKey = tuple[str | None, str | None, str | None]


class EventKind(NamedTuple):
    """The few fields that decide an event's log sources."""

    dataset: str
    action: str
    types: frozenset[str]
    program: str


def _fim(*actions: str) -> Callable[[EventKind], bool]:
    return lambda k: k.dataset == "sisguard.fim" and (not actions or k.action in actions)


def _auth(program: str | None) -> Callable[[EventKind], bool]:
    return lambda k: k.dataset == "sisguard.auth" and (program is None or k.program == program)


def _web_access(k: EventKind) -> bool:
    """``category: webserver``: every access-log line, parsed or not (the keywords of a
    rule still match an unparsed line's ``event.original``)."""
    return k.dataset == "sisguard.web" and "error" not in k.types


def _web_server(server: str) -> Callable[[EventKind], bool]:
    """``service: apache|nginx``: that server's logs (SigmaHQ's read the error log)."""
    return lambda k: k.dataset == "sisguard.web" and k.program == server


def _dataset(name: str) -> Callable[[EventKind], bool]:
    return lambda k: k.dataset == name


# THE table. Each concrete log source and the events that satisfy it.
LOGSOURCES: Mapping[LogsourceKey, Callable[[EventKind], bool]] = {
    ("linux", "process_creation", None):
        lambda k: k.dataset == "sisguard.process" and "start" in k.types,
    ("linux", "file_event", None): _fim(),
    ("linux", "file_change", None): _fim("updated", "attributes_modified"),
    ("linux", "file_delete", None): _fim("deleted"),
    ("linux", "file_rename", None): _fim("renamed"),
    ("linux", "network_connection", None):
        lambda k: k.dataset == "sisguard.network"
        and k.action in ("outbound_connection", "connection_accepted"),
    ("linux", None, "auth"): _auth(None),
    ("linux", None, "sshd"): _auth("sshd"),
    ("linux", None, "sudo"): _auth("sudo"),
    ("linux", "webserver", None): _web_access,
    ("linux", None, "apache"): _web_server("apache"),
    ("linux", None, "nginx"): _web_server("nginx"),
    # Our own datasets, for rules written against sisguard documents directly.
    ("sisguard", None, "fim"): _dataset("sisguard.fim"),
    ("sisguard", None, "process"): _dataset("sisguard.process"),
    ("sisguard", None, "network"): _dataset("sisguard.network"),
    ("sisguard", None, "auth"): _dataset("sisguard.auth"),
    ("sisguard", None, "inventory"): _dataset("sisguard.inventory"),
    ("sisguard", None, "web"): _dataset("sisguard.web"),
    ("sisguard", None, "agent"): _dataset("sisguard.agent"),
}


def covered_keys(product: str | None, category: str | None,
                 service: str | None) -> list[LogsourceKey]:
    """The concrete log sources a rule's (possibly partial) log source covers."""
    return [
        key for key in LOGSOURCES
        if (product is None or key[0] == product)
        and (category is None or key[1] == category)
        and (service is None or key[2] == service)
    ]


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def event_kind(event: Mapping[str, Any]) -> EventKind:
    ev = event.get("event")
    if not isinstance(ev, dict):
        ev = {}
    dataset = _text(ev.get("dataset", event.get("event.dataset")))
    action = _text(ev.get("action", event.get("event.action")))
    raw_types = ev.get("type", event.get("event.type"))
    if isinstance(raw_types, str):
        types = frozenset((raw_types,))
    elif isinstance(raw_types, list):
        types = frozenset(t for t in raw_types if isinstance(t, str))
    else:
        types = frozenset()
    program = ""
    if dataset == "sisguard.auth":
        proc = event.get("process")
        program = _text(proc.get("name")) if isinstance(proc, dict) else _text(
            event.get("process.name"))
    elif dataset == "sisguard.web":
        program = _server_of(event)
    return EventKind(dataset, action, types, program)


def _server_of(event: Mapping[str, Any]) -> str:
    ours = event.get("sisguard")
    web = ours.get("web") if isinstance(ours, dict) else None
    if isinstance(web, dict):
        return _text(web.get("server"))
    return _text(event.get("sisguard.web.server"))


_ABSENT = object()


def kind_key(event: Mapping[str, Any]) -> Hashable | None:
    """The raw values event_kind() reads, as a cache key (None: just call event_kind).

    Two events with equal keys have the same kind. Kept to plain ``event`` objects
    whose ``event.type`` is absent, a string or a list.
    """
    ev = event.get("event")
    if ev.__class__ is not dict:
        return None
    dataset = ev.get("dataset", _ABSENT)
    if dataset is _ABSENT:
        dataset = event.get("event.dataset")
    action = ev.get("action", _ABSENT)
    if action is _ABSENT:
        action = event.get("event.action")
    types = ev.get("type", _ABSENT)
    if types is _ABSENT:
        types = event.get("event.type")
    if types.__class__ is list:
        types = types[0] if len(types) == 1 and types[0].__class__ is str else tuple(types)
        # a one-string list keys like the string: both mean frozenset({that string})
    elif types is not None and not isinstance(types, str):
        return None
    if dataset == "sisguard.auth" and isinstance(dataset, str):
        proc = event.get("process")
        program = _text(proc.get("name")) if isinstance(proc, dict) else _text(
            event.get("process.name"))
        return (dataset, action, types, program)
    if dataset == "sisguard.web":
        return (dataset, action, types, _server_of(event))
    return (dataset, action, types)


def satisfied_keys(kind: EventKind) -> tuple[LogsourceKey, ...]:
    """The concrete log sources an event of this kind satisfies."""
    return tuple(key for key, test in LOGSOURCES.items() if test(kind))
