"""What correlation state keeps of an event, and how many bytes that costs.

A correlation alert needs, of its last event, ``@timestamp``, ``event.ingested`` (the day
the alert is filed under), the objects an alert copies
(``host``, ``agent``, ``organization``) and the group-by fields; a chained correlation
needs the group-by and counted fields of its own references. ``kept_paths`` is the union
of those over a rule set and ``slim`` keeps just them: a match holds a few hundred bytes,
not the whole event (a one-MB command line is not kept). ``slim`` shares the event's
values rather than copying them (nothing changes an event once detection has seen it).

``estimate`` is the state's unit of account: an approximation of what CPython holds for
a JSON-like value, bounded in depth and in the number of items it looks at, so that it
costs little even for a hostile value; beyond its bounds it counts the value as large.
``Slimmer`` makes the kept document and its size in one pass.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from collector.detection.fieldmap import MISSING
from collector.detection.getters import field_getter

Getter = Callable[[Mapping[str, Any]], Any]

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
    """The paths ``slim`` keeps: ALWAYS, WHOLE_ROOTS and ``paths`` (a computed field: what
    it is computed from), none under another (the outer value holds the inner)."""
    wanted: set[str] = set(ALWAYS) | set(WHOLE_ROOTS)
    for path in paths:
        wanted.update(COMPUTED_FROM if path.startswith("%") else (path,))
    kept: list[str] = []
    for path in sorted(wanted, key=lambda p: (p.count("."), p)):
        if not any(path.startswith(outer + ".") for outer in kept):
            kept.append(path)
    return tuple(kept)


class Slimmer:
    """``slim`` for one set of paths, with compiled getters: ``(kept, entry_size(kept))``."""

    __slots__ = ("_plan",)

    def __init__(self, paths: tuple[str, ...]) -> None:
        self._plan: tuple[tuple[Getter | None, tuple[str, ...], str], ...] = tuple(
            (None if "." not in path else field_getter(path), tuple(path.split(".")[:-1]),
             path.rsplit(".", 1)[-1]) for path in paths)

    def __call__(self, doc: Mapping[str, Any]) -> tuple[dict[str, Any], int]:
        out: dict[str, Any] = {}
        size = ENTRY_OVERHEAD + 64
        plain = doc.__class__ is dict
        for get, parents, leaf in self._plan:
            if get is None and plain:  # a top-level field: lookup() is doc.get()
                value = doc.get(leaf, MISSING)
            else:
                value = (get or field_getter(leaf))(doc)
            if value is MISSING:
                continue
            node = out
            for part in parents:
                child = node.get(part)
                if child.__class__ is not dict:
                    child = node[part] = {}
                    size += 113 + len(part)
                node = child
            node[leaf] = value
            size += 149 + len(leaf)
            if value.__class__ is str:
                size += 49 + len(value)
            elif value.__class__ is dict and len(value) <= 16:  # host, agent: flat, small
                flat = 64
                for key, item in value.items():
                    if key.__class__ is not str or item.__class__ is not str:
                        flat = estimate(value)
                        break
                    flat += 198 + len(key) + len(item)
                size += flat
            else:
                size += estimate(value)
        return out, size


def slim(doc: Mapping[str, Any], paths: tuple[str, ...]) -> dict[str, Any]:
    """A document holding the values of ``paths`` in ``doc``, nested, and nothing else.

    ``lookup(slim(doc, paths), p) == lookup(doc, p)`` for every p in paths and every path
    under them (an array of objects, or a dotted key, becomes plain nesting holding the
    looked-up value). Not for an event that holds one field both nested and as a dotted
    key with different values (``{"a": {"b": 1}, "a.b": 2}``): lookup() itself prefers
    one form, slim() the outer path's; only the correlations of that event's own sender
    can see the difference (the sender's agent.id is the collector's, always nested).
    """
    return Slimmer(paths)(doc)[0]


class _TooLarge(Exception):
    """A value beyond estimate()'s bounds."""


def _size(value: Any, depth: int, budget: list[int]) -> int:
    cls = value.__class__
    if cls is str:
        return 49 + len(value)
    if depth > _MAX_DEPTH:
        raise _TooLarge
    if cls is dict:
        budget[0] -= len(value)
        if budget[0] < 0:
            raise _TooLarge
        total = 64
        for key, child in value.items():
            total += 149 + (len(key) if key.__class__ is str else 0)
            total += 49 + len(child) if child.__class__ is str else _size(child, depth + 1,
                                                                         budget)
        return total
    if cls is list or cls is tuple:
        budget[0] -= len(value)
        if budget[0] < 0:
            raise _TooLarge
        total = 56
        for child in value:
            total += 57 + len(child) if child.__class__ is str else 8 + _size(child, depth + 1,
                                                                             budget)
        return total
    return 32


def estimate(value: Any) -> int:
    """About how many bytes CPython holds for a JSON-like value (a str about 49 bytes
    plus its length, a dict 64 plus 149 per item and its key's length, ...), looking at
    no more than _MAX_NODES items and _MAX_DEPTH levels: beyond, it counts 1 MiB."""
    try:
        return _size(value, 0, [_MAX_NODES])
    except _TooLarge:
        return _TOO_DEEP
    except RecursionError:
        return _TOO_DEEP


def entry_size(doc: Mapping[str, Any]) -> int:
    """What one match of ``doc`` costs a correlation state."""
    return ENTRY_OVERHEAD + estimate(doc)
