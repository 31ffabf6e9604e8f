"""Compiled field getters: ``lookup(doc, path)`` with the dict walk written out.

matcher.lookup() finds a field in an event: nested keys, dotted keys
(``{"event.dataset": ...}``), arrays of objects. For one path the walk through plain
dicts is always the same few ``dict.get`` calls, so we write them out as a function
and compile it once; anything else (a list, a dict subclass, a computed field) is
handed to lookup(), which then gives the answer. Path parts reach the source only as
``repr()`` of a ``str``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from collector.detection.fieldmap import COMPUTED, MISSING
from collector.detection.matcher import as_text, lookup


def literal(text: str) -> str:
    """The Python literal of a text (a str, never anything else)."""
    assert isinstance(text, str)
    return str.__repr__(text)


_MAX_INLINE_PARTS = 5  # deeper paths: plain nesting inline, the rest by lookup()


def getter_source(name: str, path: str) -> str:
    """``name(doc)``: exactly ``lookup(doc, path)``, with the dict walk written out.

    lookup() tries nested keys, then dotted keys (``{"event.dataset": ...}``), depth
    first. For plain dicts this function tries the same keys in the same order; at
    anything else that lookup() would descend into (a list, a dict subclass) it hands
    over to lookup(), which then gives the answer.
    """
    lines = [f"def {name}(doc):"]
    parts = path.split(".")
    if path not in COMPUTED:
        lines.append("    if doc.__class__ is not dict:")
        lines.append(f"        return _lookup(doc, {literal(path)})")
        if len(parts) <= _MAX_INLINE_PARTS:
            _walk_source(lines, parts, 0, "doc", "    ", path)
            lines.append("    return _M")
            return "\n".join(lines)
        node = "doc"
        for depth, part in enumerate(parts):  # the plain-nesting try only
            child = f"n{depth}"
            lines.append(f"    {child} = {node}.get({literal(part)}, _M)")
            if depth < len(parts) - 1:
                lines.append(f"    if {child}.__class__ is not dict:")
                lines.append(f"        return _lookup(doc, {literal(path)})")
            node = child
        lines.append(f"    if {node} is not _M:")
        lines.append(f"        return {node}")
    lines.append(f"    return _lookup(doc, {literal(path)})")
    return "\n".join(lines)


def _walk_source(lines: list[str], parts: list[str], start: int, node: str, indent: str,
                 path: str) -> None:
    """Statements trying parts[start:] under node (a plain dict); return when found."""
    for end in range(start + 1, len(parts) + 1):
        child = f"n{end}_{start}"
        lines.append(f"{indent}{child} = {node}.get({literal('.'.join(parts[start:end]))}, _M)")
        if end == len(parts):
            lines.append(f"{indent}if {child} is not _M:")
            lines.append(f"{indent}    return {child}")
            continue
        lines.append(f"{indent}if {child}.__class__ is dict:")
        _walk_source(lines, parts, end, child, indent + "    ", path)
        lines.append(f"{indent}elif isinstance({child}, dict | list):")
        lines.append(f"{indent}    return _lookup(doc, {literal(path)})")


_GETTERS: dict[str, Callable[[Mapping[str, Any]], Any]] = {}


def field_getter(path: str) -> Callable[[Mapping[str, Any]], Any]:
    """A compiled ``lambda doc: lookup(doc, path)`` (cached per path)."""
    getter = _GETTERS.get(path)
    if getter is None:
        namespace: dict[str, Any] = {"_M": MISSING, "_lookup": lookup}
        exec(compile(getter_source("get", path), "<sisguard-field>", "exec"), namespace)
        getter = namespace["get"]
        if len(_GETTERS) < 10_000:
            _GETTERS[path] = getter
    return getter


def key_getter(paths: Sequence[str], convert: Callable[[Any], Any]
               ) -> Callable[[Mapping[str, Any]], tuple[Any, ...]]:
    """A compiled ``lambda doc: tuple(convert(lookup(doc, p)) for p in paths)``,
    where a value that is a plain ``str`` is taken as it is (convert must agree)."""
    namespace: dict[str, Any] = {"_M": MISSING, "_lookup": lookup, "_conv": convert}
    sources = [getter_source(f"_get{i}", path) for i, path in enumerate(paths)]
    lines = ["def key(doc):"]
    lines += [f"    v{i} = _get{i}(doc)" for i in range(len(paths))]
    parts = "".join(f"v{i} if v{i}.__class__ is str else _conv(v{i}), "
                    for i in range(len(paths)))
    lines.append(f"    return ({parts})")
    exec(compile("\n\n".join([*sources, "\n".join(lines)]) + "\n", "<sisguard-key>", "exec"),
         namespace)
    key: Callable[[Mapping[str, Any]], tuple[Any, ...]] = namespace["key"]
    return key


def key_part(value: Any) -> Any:
    """One part of a group key: the text of a value, a tuple of texts for an array."""
    if value.__class__ is str:
        return value
    if isinstance(value, list):
        return tuple(as_text(v) for v in value)
    return as_text(value)


KeyFunction = Callable[[Mapping[str, Any]], tuple[Any, ...]]
_KEY_FUNCTIONS: dict[tuple[str, ...], KeyFunction] = {}


def group_key_function(paths: tuple[str, ...]) -> KeyFunction:
    """The compiled group key of these paths: one function object per paths, so that
    correlations grouping a rule's matches alike can share one key per event."""
    function = _KEY_FUNCTIONS.get(paths)
    if function is None:
        function = key_getter(paths, key_part)
        if len(_KEY_FUNCTIONS) < 10_000:
            _KEY_FUNCTIONS[paths] = function
    return function
