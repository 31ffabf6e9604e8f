"""What correlation state keeps of an event, and how many bytes that costs.

A correlation alert needs, of its last event, ``@timestamp``, ``event.ingested`` (the day
the alert is filed under), the objects an alert copies
(``host``, ``agent``, ``organization``) and the group-by fields; a chained correlation
needs the group-by and counted fields of its own references. ``kept_paths`` is the union
of those over a rule set and ``slim`` keeps just them: a match holds a few hundred bytes,
not the whole event (a one-MB command line is not kept). ``slim`` shares the event's
values rather than copying them (nothing changes an event once detection has seen it).

``estimate`` is the state's unit of account: an approximation of what CPython holds for
a JSON-like value (a str is about 49 bytes plus its length, a dict about 64 bytes plus
100 per item, ...), bounded in depth and in the number of nodes it looks at, so that it
costs little even for a hostile value; beyond its bounds it counts the value as large.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from collector.detection.fieldmap import MISSING
from collector.detection.matcher import lookup

# What every correlation alert copies whole from its last event (alerts.COPIED_FIELDS).
WHOLE_ROOTS = ("host", "agent", "organization")
ALWAYS = ("@timestamp", "event.ingested")

ENTRY_OVERHEAD = 200  # the entry tuple, its event-id tuple, the deque slot, the slim dict
_MAX_DEPTH = 32
_MAX_NODES = 10_000
_TOO_DEEP = 1 << 20  # what a value is counted as beyond the bounds: 1 MiB


# What a computed field (fieldmap.COMPUTED, named ``%...``) is computed from.
COMPUTED_FROM = ("event.dataset", "event.action")


def kept_paths(paths: Iterable[str]) -> tuple[str, ...]:
    """The paths ``slim`` keeps: ALWAYS, WHOLE_ROOTS and ``paths`` not under them (a
    computed field: what it is computed from)."""
    wanted: set[str] = set()
    for path in paths:
        wanted.update(COMPUTED_FROM if path.startswith("%") else (path,))
    extra = sorted(p for p in wanted if p.split(".", 1)[0] not in WHOLE_ROOTS)
    return (*ALWAYS, *WHOLE_ROOTS, *(p for p in extra if p not in ALWAYS))


def slim(doc: Mapping[str, Any], paths: tuple[str, ...]) -> dict[str, Any]:
    """A document holding the values of ``paths`` in ``doc``, nested, and nothing else.

    ``lookup(slim(doc, paths), p) == lookup(doc, p)`` for every p in paths (a dotted key
    or an array of objects in ``doc`` becomes plain nesting holding the looked-up value).
    """
    out: dict[str, Any] = {}
    for path in paths:
        value = doc.get(path, MISSING) if "." not in path else lookup(doc, path)
        if value is MISSING:
            continue
        node = out
        *parents, leaf = path.split(".")
        for part in parents:
            child = node.get(part)
            if not isinstance(child, dict):
                child = node[part] = {}
            node = child
        node[leaf] = value
    return out


def estimate(value: Any) -> int:
    """About how many bytes CPython holds for a JSON-like value (bounded work)."""
    total = 0
    nodes = 0
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        nodes += 1
        if nodes > _MAX_NODES or depth > _MAX_DEPTH:
            return total + _TOO_DEEP
        cls = item.__class__
        if cls is str:
            total += 49 + len(item)
        elif cls is dict:
            total += 64 + 100 * len(item)
            for key, child in item.items():
                total += 49 + len(key) if key.__class__ is str else 32
                stack.append((child, depth + 1))
        elif cls is list or cls is tuple:
            total += 56 + 8 * len(item)
            stack.extend((child, depth + 1) for child in item)
        else:
            total += 32
    return total


def entry_size(doc: Mapping[str, Any]) -> int:
    """What one match of ``doc`` costs a correlation state."""
    return ENTRY_OVERHEAD + estimate(doc)
