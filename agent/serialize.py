"""One document to UTF-8 JSON, or a ``sensor_error`` that says which field stopped it.

Serializing can fail for one document only: a lone surrogate that escaped a sensor, a
number JSON cannot carry (NaN, infinity), a circular or absurdly deep structure, a key
that is not a string. The spool and the shipper then put :func:`error_document` in its
place (same sequence number), so the document costs only itself and everything behind it
flows on. A document larger than the limit first has its long texts and lists cut
(listed in ``sisguard.truncated``), so that the event still goes; it is replaced only
when even that does not fit.
"""

from __future__ import annotations

import json
import math
from typing import Any

from agent.ecs import Document, new_event
from common.text import is_valid_text, os_text

# A document above this is replaced (the collector takes 4 MiB messages by default).
MAX_DOCUMENT_BYTES = 1024 * 1024
# Bounds on the walk that looks for the offending field.
MAX_DEPTH = 64
MAX_NODES = 100_000
_FIELD_CHARS = 200
# (longest text, most list items) tried in turn on a document over the size limit
SHRINK_STEPS = ((8192, 256), (1024, 32), (128, 8))


class DocumentError(Exception):
    """One document cannot be stored or sent: ``reason``, at ``field``."""

    def __init__(self, reason: str, field: str) -> None:
        super().__init__(f"{field}: {reason}" if field else reason)
        self.reason = reason
        self.field = field


def encode_document(doc: Any, *, max_bytes: int = MAX_DOCUMENT_BYTES) -> bytes:
    """The document as compact UTF-8 JSON; raises :class:`DocumentError` naming the
    field when it cannot be encoded or is larger than ``max_bytes``."""
    try:
        blob = json.dumps(doc, ensure_ascii=False, separators=(",", ":"), allow_nan=False,
                          default=str).encode("utf-8")
    except (TypeError, ValueError, RecursionError) as e:   # UnicodeError is a ValueError
        field, reason = find_offender(doc)
        raise DocumentError(reason or f"{type(e).__name__}: {e}", field) from e
    if len(blob) > max_bytes:
        return _shrunk(doc, len(blob), max_bytes)
    return blob


def _shrunk(doc: Any, size: int, max_bytes: int) -> bytes:
    """A document too large, with its long texts and lists cut (named in
    ``sisguard.truncated``) so that the event itself still goes: a user must not hide a
    process behind a huge command line. Replaced only if even that does not fit."""
    if isinstance(doc, dict):
        for max_text, max_items in SHRINK_STEPS:
            cut: list[str] = []
            small = _shrink(doc, "", 0, max_text, max_items, cut)
            extra = small.setdefault("sisguard", {})
            if isinstance(extra, dict):
                extra["truncated"] = cut[:64]
            blob = json.dumps(small, ensure_ascii=False, separators=(",", ":"),
                              allow_nan=False, default=str).encode("utf-8")
            if len(blob) <= max_bytes:
                return blob
    raise DocumentError(f"document of {size} bytes exceeds {max_bytes}", largest_field(doc))


def _shrink(value: Any, path: str, depth: int, max_text: int, max_items: int,
            cut: list[str]) -> Any:
    if depth > MAX_DEPTH:
        cut.append(path)
        return None
    if isinstance(value, dict):
        return {k: _shrink(v, _name(path, k), depth + 1, max_text, max_items, cut)
                for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        if len(value) > max_items:
            cut.append(path)
        return [_shrink(v, f"{path}[{i}]", depth + 1, max_text, max_items, cut)
                for i, v in enumerate(value[:max_items])]
    if isinstance(value, str) and len(value) > max_text:
        cut.append(path)
        return value[:max_text]
    return value


def _name(path: str, key: Any) -> str:
    part = (os_text(key) or '""') if isinstance(key, str) else repr(key)
    return f"{path}.{part}" if path else part


def _leaf_problem(value: Any) -> str:
    if isinstance(value, str):
        return "" if is_valid_text(value) else "text that is not valid UTF-8 (lone surrogate)"
    if isinstance(value, float) and not math.isfinite(value):
        return f"a number JSON cannot carry ({value})"
    if value is None or isinstance(value, (bool, int, float)):
        return ""
    text = str(value)   # json.dumps(default=str) does the same
    return "" if is_valid_text(text) else f"a {type(value).__name__} whose text is not UTF-8"


def find_offender(doc: Any) -> tuple[str, str]:
    """(dotted field path, reason) of the first thing JSON cannot carry, within bounds;
    ("", "") when nothing is found."""
    stack: list[tuple[str, Any, int]] = [("", doc, 0)]
    seen: set[int] = set()
    nodes = 0
    while stack:
        path, value, depth = stack.pop()
        nodes += 1
        if nodes > MAX_NODES:
            return path, f"more than {MAX_NODES} fields"
        if depth > MAX_DEPTH:
            return path, f"nested deeper than {MAX_DEPTH}"
        if isinstance(value, (dict, list, tuple)):
            if id(value) in seen:
                return path, "circular reference"
            seen.add(id(value))
        if isinstance(value, dict):
            for key in reversed(list(value)):
                name = _name(path, key)
                if isinstance(key, str):
                    if not is_valid_text(key):
                        return name, "a key that is not valid UTF-8 (lone surrogate)"
                elif not (key is None or isinstance(key, (bool, int, float))):
                    return name, f"a key of type {type(key).__name__}"
                elif isinstance(key, float) and not math.isfinite(key):
                    return name, f"a key JSON cannot carry ({key})"
                stack.append((name, value[key], depth + 1))
        elif isinstance(value, (list, tuple)):
            for i in reversed(range(len(value))):
                stack.append((f"{path}[{i}]", value[i], depth + 1))
        else:
            problem = _leaf_problem(value)
            if problem:
                return path, problem
    return "", ""


def _size(value: Any) -> int:
    try:
        return len(json.dumps(value, ensure_ascii=False, default=str))
    except (TypeError, ValueError, RecursionError):
        return len(str(value))


def largest_field(doc: Any) -> str:
    """The dotted path of the field that holds most of ``doc``'s size: from the top,
    follow the largest child while it holds at least half of its parent."""
    path, node = "", doc
    for _ in range(MAX_DEPTH):
        if isinstance(node, dict):
            children = [(_name(path, k), v) for k, v in node.items()]
        elif isinstance(node, (list, tuple)):
            children = [(f"{path}[{i}]", v) for i, v in enumerate(node)]
        else:
            break
        if not children:
            break
        sizes = [(_size(v), name, v) for name, v in children[:1000]]
        size, name, child = max(sizes, key=lambda t: t[0])
        if path and size * 2 < sum(t[0] for t in sizes):
            break   # spread over many children: this node is the field
        path, node = name, child
    return path


def _dataset(doc: Any) -> str:
    event = doc.get("event") if isinstance(doc, dict) else None
    dataset = event.get("dataset") if isinstance(event, dict) else None
    return os_text(dataset)[:_FIELD_CHARS] if isinstance(dataset, str) else ""


def _as_text(value: str) -> str:
    """Already text (built with os_text) as it is; anything else escaped."""
    return value if is_valid_text(value) else os_text(value)


def error_document(original: Any, *, reason: str, field: str, stage: str) -> Document:
    """The ``sensor_error`` event that stands in for a document that cannot go on."""
    dataset = _dataset(original)
    sensor = dataset.rpartition(".")[2] or "unknown"
    field_text = _as_text(field)[:_FIELD_CHARS]
    reason_text = _as_text(reason)[:500]
    doc = new_event("sisguard.agent", category=["host"], type=["error"],
                    action="sensor_error")
    doc["error"] = {"message": reason_text, "type": "document"}
    doc["message"] = (f"sensor {sensor}: one document dropped at the {stage}: "
                      f"{reason_text}" + (f" (field {field_text})" if field_text else ""))
    doc["sisguard"] = {"sensor": {"name": sensor, "dataset": dataset, "stage": stage,
                                  "field": field_text}}
    event = original.get("event") if isinstance(original, dict) else None
    action = event.get("action") if isinstance(event, dict) else None
    if isinstance(action, str):
        doc["sisguard"]["sensor"]["action"] = os_text(action)[:_FIELD_CHARS]
    return doc
