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
MAX_VALUES = 50_000         # objects and arrays in one document
LONG_RANGE = (-(2**63), 2**63 - 1)
_LONG_MIN, _LONG_MAX = LONG_RANGE
AGENT_KINDS = ("event", "state")
# only the collector writes these (alerts, and what it notes about agent documents)
OWNED = ("rule", "threat", "sisguard.alert", "sisguard.stripped", "sisguard.sequence_anomaly",
         "sisguard.deadletter")



def _schema() -> dict[str, Any]:
    """The mapping as a tree: an object is a dict of its fields, a leaf its type."""
    root: dict[str, Any] = {}
    for name, kind in ALL_FIELDS.items():
        *parents, last = name.split(".")
        node = root
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = kind
    return root


_SCHEMA = _schema()
_ISO = re.compile(r"\d{4}(?:-\d{2}(?:-\d{2}(?:T\d{2}(?::\d{2}(?::\d{2}(?:[.,]\d{1,9})?)?)?"
                  r"(?:Z|[+-]\d{2}(?::?\d{2})?)?)?)?)?")
_NUMBER = re.compile(r"[+-]?\d{1,19}(?:\.\d*)?")


class Rejection(Exception):
    """An event that cannot be processed: the reason is said to the agent and kept."""


def _constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):   # 1e400: valid JSON, but inf is not (the archive would
        raise ValueError(f"{text[:40]} is beyond a double")   # write Infinity)
    return value


def decode_document(raw: bytes) -> tuple[dict[str, Any], list[str]]:
    """Parse and check one document; raise ``Rejection`` saying what is wrong, and where.

    Returns the document without the fields the collector owns, and those fields."""
    if len(raw) > MAX_DOCUMENT_BYTES:
        raise Rejection(f"document of {len(raw)} bytes is over the limit of "
                        f"{MAX_DOCUMENT_BYTES}")
    try:
        # strictly UTF-8, as the contract says: json.loads(bytes) would also take UTF-16
        # and UTF-32, and decode surrogates (ED A0 80) it should refuse
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise Rejection(f"document is not UTF-8: {e.reason} at byte {e.start}") from e
    try:
        event = json.loads(text, parse_constant=_constant, parse_float=_finite)
    except RecursionError as e:
        raise Rejection(f"document nests deeper than {MAX_DEPTH} levels") from e
    except ValueError as e:
        raise Rejection(f"document is not valid JSON: {e}") from e
    if not isinstance(event, dict):
        raise Rejection(f"document must be a JSON object, got {_kind(event)}")
    stripped = strip_owned(event)
    # valid UTF-8 holds no surrogate: a lone one can only come from a \\u escape
    check_shape(event, text_checked="\\u" not in text)
    return event, stripped


def check_shape(document: dict[str, Any], *, text_checked: bool = False) -> None:
    """Depth, valid text, field names, and the mapped type of every mapped field.

    ``text_checked``: the caller knows no string can hold a lone surrogate."""
    if not text_checked:
        try:
            json.dumps(document, ensure_ascii=False, check_circular=False).encode("utf-8")
        except UnicodeEncodeError:
            _find_bad_text(document)
            raise Rejection("document is not valid Unicode") from None
    if _walk(document, _SCHEMA, "", 0) > MAX_VALUES:
        raise Rejection(f"document has more than {MAX_VALUES} objects and arrays")


def _walk(value: Any, schema: dict[str, Any] | None, path: str, depth: int) -> int:
    """Check ``value`` (an object or array at ``path``) against its part of the mapping;
    returns how many objects and arrays it holds (recursive, at most MAX_DEPTH deep).
    The hot path of ingest: plain type() tests, paths built only when needed."""
    if depth >= MAX_DEPTH:
        raise Rejection(f"'{path}' nests deeper than {MAX_DEPTH} levels")
    count = 1
    if type(value) is list:
        for item in value:
            if type(item) in _CONTAINERS:
                count += _walk(item, schema, path, depth + 1)
        return count
    for key, item in value.items():
        dotted = "." in key or not key
        if dotted:
            _check_name(key, _join(path, key))
        node: Any = None
        if schema is not None:
            node = _lookup(schema, key, path) if dotted else schema.get(key)
        if node is None:                       # not mapped: any shape, within bounds
            if type(item) in _CONTAINERS:
                count += _walk(item, None, _join(path, key), depth + 1)
        elif type(node) is str:                # a mapped field
            if node in _FREE_FORM:
                if type(item) in _CONTAINERS:
                    if node == "object" and not _objects(item):
                        raise Rejection(f"'{_join(path, key)}' must be an object, "
                                        f"got {_kind(item)}")
                    count += _walk(item, None, _join(path, key), depth + 1)
                elif node == "object" and item is not None:
                    raise Rejection(f"'{_join(path, key)}' must be an object, "
                                    f"got {_kind(item)}")
            elif type(item) in _SCALARS and node in _ANY_SCALAR:
                pass                           # keyword and text take any scalar
            elif node == "long" and type(item) is int and _LONG_MIN <= item <= _LONG_MAX:
                pass
            else:
                _check_mapped(_join(path, key), item, node)
                if type(item) is list:
                    count += _walk(item, None, _join(path, key), depth + 1)
        elif type(item) is dict or (type(item) is list and _objects(item)):
            count += _walk(item, node, _join(path, key), depth + 1)   # an object we map
        elif item is not None:
            raise Rejection(f"'{_join(path, key)}' must be an object, got {_kind(item)}")
    return count


_CONTAINERS = (dict, list)
_SCALARS = (str, int, float, bool, type(None))
_FREE_FORM = ("object", "stored")
_ANY_SCALAR = ("keyword", "text")


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _lookup(schema: dict[str, Any], key: str, path: str) -> Any:
    """A dotted key (``{"source.ip": ...}``) is a path in the mapping, as for ES."""
    node: Any = schema
    for part in key.split("."):
        if type(node) is not dict:
            return _deeper(_join(path, key), node)
        node = node.get(part)
        if node is None:
            return None
    return node


def _deeper(where: str, kind: Any) -> Any:
    """A dotted key below a leaf: fine below a free-form object, else refused."""
    if kind in ("object", "stored"):
        return None
    raise Rejection(f"'{where}' goes below a {kind} field")


def _check_name(key: str, where: str) -> None:
    if not key or not all(key.split(".")):
        raise Rejection(f"field name {key!r} at '{where}' is empty or has an empty part")


def _find_bad_text(value: Any, path: str = "", depth: int = 0) -> None:
    """Raise the Rejection naming the first string (or key) that is not valid Unicode."""
    if depth > MAX_DEPTH:
        return
    if isinstance(value, str):
        _check_text(value, path)
    elif isinstance(value, list):
        for item in value:
            _find_bad_text(item, path, depth + 1)
    elif isinstance(value, dict):
        for key, item in value.items():
            _check_text(key, f"{path}.<key>" if path else "<key>")
            _find_bad_text(item, f"{path}.{key}" if path else key, depth + 1)


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
    items, seen = [value], 0
    while items:              # an array holds values of the field's type, at any depth
        item = items.pop()
        seen += 1
        if seen > MAX_VALUES:
            raise Rejection(f"'{path}' holds more than {MAX_VALUES} values")
        if isinstance(item, list):
            items.extend(item)
        elif isinstance(item, dict):
            raise Rejection(f"'{path}' is {_a(kind)} field, got an object")
        elif item is not None and not _fits(item, kind):
            shown = repr(item) if len(repr(item)) <= 40 else repr(item)[:40] + "..."
            raise Rejection(f"'{path}' is {_a(kind)} field, got {_kind(item)} {shown}")


def _a(kind: str) -> str:
    return f"an {kind}" if kind[0] in "aeiou" else f"a {kind}"


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
