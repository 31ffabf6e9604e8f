"""A compiled rule condition as a small expression tree, before it becomes code.

conditions.py turns pySigma's condition tree into these nodes; ``to_leaf`` makes them
closures over an ``EventView`` (``DetectionRule.match``, the reference semantics) and
codegen.py makes them Python source for the engine's per-event-kind matchers. Both
read the same tree, so they cannot disagree about what a rule means.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from collector.detection import matcher
from collector.detection.matcher import Leaf, RawTest, TextsTest
from collector.detection.modifiers import Pattern, text_predicate


@dataclass(frozen=True, eq=False)
class TextTest:
    """Any text of any of the fields (folded unless cased) matches any pattern."""

    paths: tuple[str, ...]
    cased: bool
    patterns: tuple[Pattern, ...]


@dataclass(frozen=True, eq=False)
class RawCheck:
    """``test(raw value of path)``: null, exists, booleans, numbers, comparisons."""

    path: str
    test: RawTest
    number: float | None = None  # set for ``field: <number>``, so ORs of them can merge


@dataclass(frozen=True, eq=False)
class TextsCheck:
    """``test(texts of paths[0], texts of paths[1], ...)``: CIDR, field references."""

    paths: tuple[str, ...]
    cased: bool
    test: TextsTest
    network: Any = None  # set for ``field|cidr``, so ORs of them can merge


@dataclass(frozen=True, eq=False)
class AllOf:
    args: tuple[Expr, ...]


@dataclass(frozen=True, eq=False)
class AnyOf:
    args: tuple[Expr, ...]


@dataclass(frozen=True, eq=False)
class NotOf:
    arg: Expr


Expr = TextTest | RawCheck | TextsCheck | AllOf | AnyOf | NotOf


def all_of(args: Sequence[Expr]) -> Expr:
    return args[0] if len(args) == 1 else AllOf(tuple(args))


def any_of(args: Sequence[Expr]) -> Expr:
    return args[0] if len(args) == 1 else AnyOf(tuple(args))


def to_leaf(expr: Expr) -> Leaf:
    """The closure that evaluates expr on an ``EventView``."""
    if isinstance(expr, TextTest):
        return matcher.text_leaf(expr.paths, text_predicate(expr.patterns), cased=expr.cased)
    if isinstance(expr, RawCheck):
        return matcher.raw_leaf(expr.path, expr.test)
    if isinstance(expr, TextsCheck):
        return matcher.texts_leaf(expr.paths, expr.test, cased=expr.cased)
    if isinstance(expr, NotOf):
        inner = to_leaf(expr.arg)
        return lambda ev: not inner(ev)
    leaves = [to_leaf(arg) for arg in expr.args]
    return _all(leaves) if isinstance(expr, AllOf) else _any(leaves)


def _all(leaves: Sequence[Leaf]) -> Leaf:
    if len(leaves) == 1:
        return leaves[0]
    if len(leaves) == 2:
        first, second = leaves
        return lambda ev: first(ev) and second(ev)
    if len(leaves) == 3:
        a, b, c = leaves
        return lambda ev: a(ev) and b(ev) and c(ev)
    return lambda ev: all(leaf(ev) for leaf in leaves)


def _any(leaves: Sequence[Leaf]) -> Leaf:
    if len(leaves) == 1:
        return leaves[0]
    if len(leaves) == 2:
        first, second = leaves
        return lambda ev: first(ev) or second(ev)
    return lambda ev: any(leaf(ev) for leaf in leaves)
