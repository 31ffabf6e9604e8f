"""An agent's document, from untrusted bytes to a JSON object every output can store.

Every problem raises ``Rejection`` naming the field, so that the event is dead-lettered
with its reason and costs nothing else: bytes over the size cap, JSON that is not valid
(or nests deeper than ``MAX_DEPTH``: the decoder's own recursion is caught too), NaN or
Infinity, strings that are not valid Unicode (a lone surrogate such as ``"\\ud800"``
decodes in Python but cannot be encoded again), a document that is not an object, and a
value of the wrong type for a field the index templates map (``source.ip: "x"``,
``@timestamp: {}``, ``file.size: "big"``): Elasticsearch would refuse those one by one,
the archive would store what Kibana cannot search.

``strip_owned`` removes the fields only the collector may write (alerts and their rules).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import math
import re
from typing import Any

from collector.outputs.es_fields import ALL_FIELDS

MAX_DOCUMENT_BYTES = 1024 * 1024
MAX_DEPTH = 32              # objects and arrays; ECS documents need 5 or 6
MAX_VALUES = 50_000         # keys, items and scalars walked in one document
LONG_RANGE = (-(2**63), 2**63 - 1)
AGENT_KINDS = ("event", "state")
OWNED = ("rule", "threat", "sisguard.alert")

_LEAVES: dict[str, str] = dict(ALL_FIELDS)
_OBJECTS: frozenset[str] = frozenset(
    ".".join(name.split(".")[:i]) for name in ALL_FIELDS for i in range(1, name.count(".") + 1)
) | frozenset(name for name, kind in ALL_FIELDS.items() if kind == "object")
_ISO = re.compile(r"\d{4}(?:-\d{2}(?:-\d{2}(?:T\d{2}(?::\d{2}(?::\d{2}(?:[.,]\d{1,9})?)?)?"
                  r"(?:Z|[+-]\d{2}(?::?\d{2})?)?)?)?)?")
_NUMBER = re.compile(r"[+-]?\d{1,19}(?:\.\d*)?")


class Rejection(Exception):
    """An event that cannot be processed: the reason is said to the agent and kept."""


def _constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def decode_document(raw: bytes) -> tuple[dict[str, Any], list[str]]:
    """Parse and check one document; raise ``Rejection`` saying what is wrong, and where.

    Returns the document without the fields the collector owns, and those fields."""
    if len(raw) > MAX_DOCUMENT_BYTES:
        raise Rejection(f"document of {len(raw)} bytes is over the limit of "
                        f"{MAX_DOCUMENT_BYTES}")
    try:
        event = json.loads(raw, parse_constant=_constant)
    except RecursionError as e:
        raise Rejection(f"document nests deeper than {MAX_DEPTH} levels") from e
    except (ValueError, UnicodeDecodeError) as e:
        raise Rejection(f"document is not valid JSON: {e}") from e
    if not isinstance(event, dict):
        raise Rejection(f"document must be a JSON object, got {_kind(event)}")
    stripped = strip_owned(event)
    check_shape(event)
    return event, stripped


def check_shape(document: dict[str, Any]) -> None:
    """Depth, size, valid text, and the mapped type of every mapped field (iterative)."""
    stack: list[tuple[str, Any, int]] = [("", document, 0)]
    walked = 0
    while stack:
        path, value, depth = stack.pop()
        walked += 1
        if walked > MAX_VALUES:
            raise Rejection(f"document has more than {MAX_VALUES} values")
        if depth > MAX_DEPTH:
            raise Rejection(f"'{path}' nests deeper than {MAX_DEPTH} levels")
        if path and path in _LEAVES:
            _check_mapped(path, value, _LEAVES[path])
        elif path in _OBJECTS and not _objects(value):
            raise Rejection(f"'{path}' must be an object, got {_kind(value)}")
        if isinstance(value, dict):
            for key, item in value.items():
                _check_text(key, f"{path}.<key>" if path else "<key>")
                stack.append((f"{path}.{key}" if path else key, item, depth + 1))
        elif isinstance(value, list):
            stack.extend((path, item, depth + 1) for item in value)
        elif isinstance(value, str):
            _check_text(value, path)


def strip_owned(document: dict[str, Any]) -> list[str]:
    """Remove what only the collector writes; return the fields removed (sorted)."""
    stripped: list[str] = []
    event = document.get("event")
    if isinstance(event, dict) and "kind" in event and event["kind"] not in AGENT_KINDS:
        event["kind"] = "event"
        stripped.append("event.kind")
    for dotted in OWNED:
        *parents, last = dotted.split(".")
        node: Any = document
        for part in parents:
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, dict) and last in node:
            del node[last]
            stripped.append(dotted)
    return sorted(stripped)


def _objects(value: Any) -> bool:
    if value is None or isinstance(value, dict):
        return True
    return isinstance(value, list) and all(v is None or isinstance(v, dict) for v in value)


def _kind(value: Any) -> str:
    return {dict: "an object", list: "an array", str: "a string", bool: "a boolean",
            int: "a number", float: "a number"}.get(type(value), type(value).__name__)


def _check_text(text: str, path: str) -> None:
    if text.isascii():
        return
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise Rejection(f"'{path}' is not valid Unicode (a lone surrogate at {e.start})") from e


def _check_mapped(path: str, value: Any, kind: str) -> None:
    if kind == "stored" or value is None:
        return
    if kind == "object":
        if not _objects(value):
            raise Rejection(f"'{path}' must be an object, got {_kind(value)}")
        return
    if isinstance(value, list):  # an array of values of the field's type (the walk checks
        return                   # each item with the same path)
    if isinstance(value, dict):
        raise Rejection(f"'{path}' is a {kind} field, got an object")
    if not _fits(value, kind):
        shown = repr(value) if len(repr(value)) <= 40 else repr(value)[:40] + "..."
        raise Rejection(f"'{path}' is a {kind} field, got {_kind(value)} {shown}")


def _fits(value: Any, kind: str) -> bool:
    if kind in ("keyword", "text"):
        return True
    if kind == "boolean":
        return isinstance(value, bool) or value in ("true", "false", "")
    if isinstance(value, bool):
        return False
    if kind in ("long", "float"):
        return _numeric(value, integral=kind == "long")
    if kind == "date":
        if isinstance(value, int):
            return LONG_RANGE[0] <= value <= LONG_RANGE[1]
        return isinstance(value, str) and (_iso_date(value) or _numeric(value, integral=True))
    if kind == "ip":
        return isinstance(value, str) and "%" not in value and _ip(value)
    return False


def _numeric(value: Any, *, integral: bool) -> bool:
    if isinstance(value, str):
        if not _NUMBER.fullmatch(value.strip()):
            return False
        value = float(value)
    if isinstance(value, int):
        return not integral or LONG_RANGE[0] <= value <= LONG_RANGE[1]
    if isinstance(value, float):
        return math.isfinite(value) and (not integral or abs(value) < 2.0**63)
    return False


def _iso_date(text: str) -> bool:
    if len(text) > 40 or not _ISO.fullmatch(text):
        return False
    try:
        dt.datetime.fromisoformat(text.replace("Z", "+00:00").replace(",", ".")
                                  if "T" in text else text[:10])
    except ValueError:
        return len(text) < 10 and text[:4].isdigit()  # a bare year or year-month
    return True


def _ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True
