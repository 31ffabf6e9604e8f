"""Field access into ECS documents and the leaf tests of a compiled rule.

``EventView`` wraps one event for the duration of one ``process`` call: it looks a field
up once (nested dicts, literally dotted keys, arrays of objects) and keeps its values as
texts and as folded texts, so a hundred rules testing ``process.command_line`` fold it
once. Every leaf is a closure ``EventView -> bool``: the reference semantics
(``DetectionRule.match``). The engine runs code generated from the same expressions
(codegen.py) that calls the raw-value and texts tests defined here.

Semantics (see the README): an array matches when any element does; ``null`` means
absent or None; ``''`` means present and empty; ``exists`` means present and not None;
numbers compare numerically when both sides are numbers, otherwise as text; booleans
are the texts ``true``/``false``.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from collector.detection.fieldmap import COMPUTED, MISSING
from collector.detection.modifiers import TextPredicate, fold

Leaf = Callable[["EventView"], bool]

_SPLITS: dict[str, tuple[str, ...]] = {}


def _split(path: str) -> tuple[str, ...]:
    parts = _SPLITS.get(path)
    if parts is None:
        parts = tuple(path.split("."))
        if len(_SPLITS) < 100_000:
            _SPLITS[path] = parts
    return parts


def _walk(node: Any, parts: tuple[str, ...], start: int) -> Any:
    """Value at parts[start:] under node; tries nested keys, then dotted keys."""
    if isinstance(node, list):
        found: list[Any] = []
        for item in node:
            value = _walk(item, parts, start)
            if value is MISSING:
                continue
            if isinstance(value, list):
                found.extend(value)
            else:
                found.append(value)
        return found if found else MISSING
    if not isinstance(node, dict):
        return MISSING
    count = len(parts)
    for end in range(start + 1, count + 1):
        key = parts[start] if end == start + 1 else ".".join(parts[start:end])
        if key in node:
            value = node[key]
            if end == count:
                return value
            value = _walk(value, parts, end)
            if value is not MISSING:
                return value
    return MISSING


def lookup(doc: Mapping[str, Any], path: str) -> Any:
    """The value of a field in an event, or MISSING."""
    computed = COMPUTED.get(path)
    if computed is not None:
        return computed(doc)
    node: Any = doc
    for part in _split(path):  # fast path: plain nesting
        if isinstance(node, dict) and part in node:
            node = node[part]
        else:
            break
    else:
        return node
    return _walk(doc, _split(path), 0)


def _scalars(value: Any) -> Iterator[Any]:
    if isinstance(value, list):
        for item in value:
            yield from _scalars(item)
    elif value is not None and value is not MISSING:
        yield value


def as_text(value: Any) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return None


def as_number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def texts_of(value: Any) -> tuple[str, ...]:
    """The texts of a field's raw value (none when absent, several for an array)."""
    if isinstance(value, str):
        return (value,)
    return tuple(t for t in map(as_text, _scalars(value)) if t is not None)


class EventView:
    """One event, with per-field caches for the duration of one match."""

    __slots__ = ("_folded", "_raw", "_texts", "doc")

    def __init__(self, doc: Mapping[str, Any]) -> None:
        self.doc = doc
        self._raw: dict[str, Any] = {}
        self._texts: dict[str, tuple[str, ...]] = {}
        self._folded: dict[str, tuple[str, ...]] = {}

    def raw(self, path: str) -> Any:
        try:
            return self._raw[path]
        except KeyError:
            value = self._raw[path] = lookup(self.doc, path)
            return value

    def texts(self, path: str) -> tuple[str, ...]:
        try:
            return self._texts[path]
        except KeyError:
            texts = self._texts[path] = texts_of(self.raw(path))
            return texts

    def folded(self, path: str) -> tuple[str, ...]:
        try:
            return self._folded[path]
        except KeyError:
            texts = self._folded[path] = tuple(map(fold, self.texts(path)))
            return texts


def text_leaf(paths: tuple[str, ...], pred: TextPredicate, *, cased: bool) -> Leaf:
    """True when any text of any of the fields satisfies pred."""
    if len(paths) == 1:
        (path,) = paths
        if cased:
            def one_cased(ev: EventView) -> bool:
                return any(pred(t) for t in ev.texts(path))
            return one_cased

        def one(ev: EventView) -> bool:
            texts = ev.folded(path)
            if len(texts) == 1:
                return bool(pred(texts[0]))
            return any(pred(t) for t in texts)
        return one

    def many(ev: EventView) -> bool:
        for path in paths:
            texts = ev.texts(path) if cased else ev.folded(path)
            if any(pred(t) for t in texts):
                return True
        return False
    return many


RawTest = Callable[[Any], bool]
TextsTest = Callable[..., bool]


def raw_leaf(path: str, test: RawTest) -> Leaf:
    return lambda ev: test(ev.raw(path))


def _number_text(number: float) -> str:
    return str(int(number)) if float(number).is_integer() else str(number)


def number_test(number: float) -> RawTest:
    text = _number_text(number)

    def test(value: Any) -> bool:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return bool(value == number)
        return as_text(value) == text
    return lambda raw: any(test(v) for v in _scalars(raw))


def numbers_test(numbers: Sequence[float]) -> RawTest:
    """``any(number_test(n)(raw) for n in numbers)`` as set lookups (numbers not NaN)."""
    assert all(n == n for n in numbers), "NaN never equals itself: test it on its own"
    values = frozenset(numbers)
    texts = frozenset(map(_number_text, numbers))

    def test(value: Any) -> bool:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return value in values
        return as_text(value) in texts

    def run(raw: Any) -> bool:
        if raw.__class__ is int:
            return raw in values
        return any(test(v) for v in _scalars(raw))
    return run


def bool_test(wanted: bool) -> RawTest:
    word = "true" if wanted else "false"

    def test(value: Any) -> bool:
        if isinstance(value, bool):
            return value is wanted
        return isinstance(value, str) and value.lower() == word
    return lambda raw: any(test(v) for v in _scalars(raw))


def null_test(raw: Any) -> bool:
    return raw is MISSING or raw is None


def exists_test(wanted: bool) -> RawTest:
    return lambda raw: (raw is not MISSING and raw is not None) is wanted


def compare_test(op: str, number: float) -> RawTest:
    ops: dict[str, Callable[[float], bool]] = {
        "lt": lambda v: v < number, "lte": lambda v: v <= number,
        "gt": lambda v: v > number, "gte": lambda v: v >= number,
        "neq": lambda v: v != number,
    }
    check = ops[op]

    def test(raw: Any) -> bool:
        for value in _scalars(raw):
            num = as_number(value)
            if num is not None and check(num):
                return True
        return False
    return test


def cidr_test(network: ipaddress.IPv4Network | ipaddress.IPv6Network) -> TextsTest:
    """Over the (cased) texts of one field."""
    def test(texts: tuple[str, ...]) -> bool:
        for text in texts:
            try:
                if ipaddress.ip_address(text) in network:
                    return True
            except ValueError:
                continue
        return False
    return test


def cidrs_test(networks: Sequence[ipaddress.IPv4Network | ipaddress.IPv6Network]
               ) -> TextsTest:
    """``any(cidr_test(n)(texts) for n in networks)``, parsing each text once."""
    def test(texts: tuple[str, ...]) -> bool:
        for text in texts:
            try:
                address = ipaddress.ip_address(text)
            except ValueError:
                continue
            if any(address in network for network in networks):
                return True
        return False
    return test


def fieldref_test(*, starts: bool, ends: bool) -> TextsTest:
    """Over the texts of a field and of the field it refers to (same casing)."""
    def compare(value: str, ref: str) -> bool:
        if starts and ends:
            return ref in value
        if starts:
            return value.startswith(ref)
        if ends:
            return value.endswith(ref)
        return value == ref

    def test(mine: tuple[str, ...], refs: tuple[str, ...]) -> bool:
        return any(compare(v, r) for v in mine for r in refs)
    return test


def texts_leaf(paths: tuple[str, ...], test: TextsTest, *, cased: bool) -> Leaf:
    """test(texts of paths[0], texts of paths[1], ...)."""
    if cased:
        return lambda ev: test(*(ev.texts(p) for p in paths))
    return lambda ev: test(*(ev.folded(p) for p in paths))


def number_leaf(path: str, number: float) -> Leaf:
    return raw_leaf(path, number_test(number))


def bool_leaf(path: str, wanted: bool) -> Leaf:
    return raw_leaf(path, bool_test(wanted))


def null_leaf(path: str) -> Leaf:
    return raw_leaf(path, null_test)


def exists_leaf(path: str, wanted: bool) -> Leaf:
    return raw_leaf(path, exists_test(wanted))


def compare_leaf(path: str, op: str, number: float) -> Leaf:
    return raw_leaf(path, compare_test(op, number))


def cidr_leaf(path: str, network: ipaddress.IPv4Network | ipaddress.IPv6Network) -> Leaf:
    return texts_leaf((path,), cidr_test(network), cased=True)


def fieldref_leaf(path: str, other: str, *, starts: bool, ends: bool, cased: bool) -> Leaf:
    return texts_leaf((path, other), fieldref_test(starts=starts, ends=ends), cased=cased)
