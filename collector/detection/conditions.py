"""Compile pySigma's parsed condition trees into expressions (expr.py) and closures.

pySigma resolves identifiers, ``1 of x*``, ``all of them`` and value lists into a tree
of ``ConditionAND``/``OR``/``NOT`` with field=value leaves. We compile that tree; inside
an OR, string leaves on the same field are merged into one predicate (one lookup, one
set test or one regex), which is where most of the speed comes from.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from sigma.conditions import (
    ConditionAND,
    ConditionFieldEqualsValueExpression,
    ConditionItem,
    ConditionNOT,
    ConditionOR,
    ConditionValueExpression,
)
from sigma.rule import SigmaDetection, SigmaDetectionItem, SigmaDetections
from sigma.types import (
    SigmaBool,
    SigmaCasedString,
    SigmaCIDRExpression,
    SigmaCompareExpression,
    SigmaExists,
    SigmaExpansion,
    SigmaFieldReference,
    SigmaNull,
    SigmaNumber,
    SigmaRegularExpression,
    SigmaString,
    SigmaType,
    SpecialChars,
)

from collector.detection import matcher
from collector.detection.expr import (
    Expr,
    NotOf,
    RawCheck,
    TextsCheck,
    TextTest,
    all_of,
    any_of,
    to_leaf,
)
from collector.detection.fieldmap import UnknownFieldError, resolve_field
from collector.detection.matcher import EventView, Leaf
from collector.detection.modifiers import (
    ENCODING_MODIFIERS,
    MODIFIER_NAMES,
    UNSUPPORTED_MODIFIERS,
    Pattern,
    UnsupportedConstruct,
    regex_pattern,
    string_pattern,
)
from collector.detection.prefilter import Anchor, anchor_score, indexable

# Keyword (bare value) detections search these fields.
KEYWORD_FIELDS = ("message", "event.original")

Node = ConditionItem | ConditionFieldEqualsValueExpression | ConditionValueExpression | None
_GroupKey = tuple[tuple[str, ...], bool]  # (fields, cased)


class ConditionCompiler:
    """Compiles one rule's condition; ``mapping`` maps Sigma field names to ECS."""

    def __init__(self, mapping: Mapping[str, str],
                 modifiers: Mapping[int, frozenset[str]] | None = None) -> None:
        self.mapping = mapping
        # id(value) -> modifier names of the detection item the value came from
        # (pySigma re-parents leaves, so the tree alone does not say).
        self.modifiers = modifiers or {}

    def compile(self, node: Node) -> Leaf:
        return to_leaf(self.expr(node))

    def expr(self, node: Node) -> Expr:
        if node is None:
            raise UnsupportedConstruct("empty condition", "the condition selects nothing")
        if isinstance(node, ConditionNOT):
            return NotOf(self.expr(node.args[0]))
        if isinstance(node, ConditionAND):
            return all_of([self.expr(arg) for arg in node.args])
        if isinstance(node, ConditionOR):
            return self._expr_or(node.args)
        if isinstance(node, ConditionFieldEqualsValueExpression | ConditionValueExpression):
            return self._leaf(node)
        raise UnsupportedConstruct(type(node).__name__, "unknown condition element")

    def anchor(self, node: Node) -> Anchor | None:
        """A field test every match of node must pass (see prefilter.py), if any."""
        if isinstance(node, ConditionAND):
            found = [a for a in (self.anchor(arg) for arg in node.args) if a is not None]
            return max(found, key=anchor_score) if found else None
        if isinstance(node, ConditionOR):
            parts = [self.anchor(arg) for arg in node.args]
            first = parts[0] if parts else None
            if first is None or any(p is None or (p.path, p.cased) != (first.path, first.cased)
                                    for p in parts):
                return None
            return Anchor(first.path, first.cased,
                          tuple(pt for p in parts if p is not None for pt in p.patterns))
        grouped = self._patterns(node)
        if grouped is None:
            return None
        (paths, cased), patterns = grouped
        if len(paths) != 1 or not indexable(patterns):
            return None
        return Anchor(paths[0], cased, tuple(patterns))

    def _expr_or(self, args: Sequence[Any]) -> Expr:
        groups: dict[_GroupKey, list[Pattern]] = {}
        others: list[Expr] = []
        for arg in args:
            grouped = self._patterns(arg)
            if grouped is None:
                others.append(self.expr(arg))
            else:
                key, patterns = grouped
                groups.setdefault(key, []).extend(patterns)
        leaves: list[Expr] = [TextTest(paths, cased, tuple(patterns))
                              for (paths, cased), patterns in groups.items()]
        return any_of(leaves + others)

    def _field(self, node: ConditionFieldEqualsValueExpression | ConditionValueExpression
               ) -> tuple[str, ...]:
        if isinstance(node, ConditionValueExpression):
            return KEYWORD_FIELDS
        try:
            return (resolve_field(node.field, self.mapping),)
        except UnknownFieldError as e:
            raise UnsupportedConstruct(f"field {node.field}", str(e), field=node.field) from e

    def _patterns(self, node: Any) -> tuple[_GroupKey, list[Pattern]] | None:
        """The text patterns of a string leaf (None if node is not one)."""
        if not isinstance(node, ConditionFieldEqualsValueExpression | ConditionValueExpression):
            return None
        names = self.modifiers.get(id(node.value), frozenset())
        _check_modifiers(node, names)
        values = node.value.values if isinstance(node.value, SigmaExpansion) else [node.value]
        strings = [v for v in values if isinstance(v, SigmaString | SigmaRegularExpression)]
        if len(strings) != len(values):
            return None
        encoded = bool(ENCODING_MODIFIERS & names)
        keyword = isinstance(node, ConditionValueExpression)
        patterns = [_pattern(v, encoded=encoded, keyword=keyword) for v in strings]
        cased_set = {p.cased for p in patterns}
        if len(cased_set) != 1:
            return None
        return (self._field(node), cased_set.pop()), patterns

    def _leaf(self, node: ConditionFieldEqualsValueExpression | ConditionValueExpression) -> Expr:
        grouped = self._patterns(node)
        if grouped is not None:
            (paths, cased), patterns = grouped
            return TextTest(paths, cased, tuple(patterns))
        value = node.value
        if isinstance(value, SigmaExpansion):
            return any_of([self._leaf(type(node)(*_with_value(node, v))) for v in value.values])
        if isinstance(node, ConditionValueExpression) and isinstance(value, SigmaNumber):
            # a number in a keyword list (SigmaHQ's `- 200`) is searched as its text
            return self._leaf(ConditionValueExpression(SigmaString(str(value.number))))
        if isinstance(node, ConditionValueExpression):
            raise UnsupportedConstruct(f"keyword value {type(value).__name__}",
                                       "keywords must be strings")
        (path,) = self._field(node)
        return self._typed_leaf(path, value, node)

    def _typed_leaf(self, path: str, value: SigmaType,
                    node: ConditionFieldEqualsValueExpression) -> Expr:
        if isinstance(value, SigmaNull):
            return RawCheck(path, matcher.null_test)
        if isinstance(value, SigmaExists):
            return RawCheck(path, matcher.exists_test(value.exists))
        if isinstance(value, SigmaBool):
            return RawCheck(path, matcher.bool_test(value.boolean))
        if isinstance(value, SigmaNumber):
            return RawCheck(path, matcher.number_test(value.number), value.number)
        if isinstance(value, SigmaCompareExpression):
            op = value.op.name.lower()
            return RawCheck(path, matcher.compare_test(op, value.number.number))
        if isinstance(value, SigmaCIDRExpression):
            return TextsCheck((path,), True, matcher.cidr_test(value.network), value.network)
        if isinstance(value, SigmaFieldReference):
            try:
                other = resolve_field(value.field, self.mapping)
            except UnknownFieldError as e:
                raise UnsupportedConstruct("fieldref", str(e), field=node.field) from e
            return TextsCheck((path, other), False,
                              matcher.fieldref_test(starts=value.starts_with,
                                                    ends=value.ends_with))
        raise UnsupportedConstruct(f"value type {type(value).__name__}",
                                   "not supported by the sisguard engine", field=node.field)


def _with_value(node: ConditionFieldEqualsValueExpression | ConditionValueExpression,
                value: SigmaType) -> tuple[Any, ...]:
    if isinstance(node, ConditionFieldEqualsValueExpression):
        return (node.field, value)
    return (value,)


def modifiers_by_value(detections: SigmaDetections) -> dict[int, frozenset[str]]:
    """id(value) -> names of the modifiers of the detection item holding it."""
    found: dict[int, frozenset[str]] = {}

    def visit(item: SigmaDetection | SigmaDetectionItem) -> None:
        if isinstance(item, SigmaDetection):
            for child in item.detection_items:
                visit(child)
            return
        names = frozenset(MODIFIER_NAMES.get(m, m.__name__) for m in item.modifiers)
        for value in item.value:
            found[id(value)] = names

    for detection in detections.detections.values():
        visit(detection)
    return found


def _check_modifiers(node: Any, names: frozenset[str]) -> None:
    for name in names:
        reason = UNSUPPORTED_MODIFIERS.get(name)
        if reason is not None:
            raise UnsupportedConstruct(f"modifier |{name}", reason,
                                       field=getattr(node, "field", None))


def _pattern(value: SigmaString | SigmaRegularExpression, *, encoded: bool,
             keyword: bool) -> Pattern:
    if isinstance(value, SigmaRegularExpression):
        return regex_pattern(value)
    cased = encoded or isinstance(value, SigmaCasedString)
    if keyword:
        # A keyword is a substring search of the message.
        if not value.startswith(SpecialChars.WILDCARD_MULTI):
            value = SpecialChars.WILDCARD_MULTI + value
        if not value.endswith(SpecialChars.WILDCARD_MULTI):
            value = value + SpecialChars.WILDCARD_MULTI
    return string_pattern(value, cased=cased)


def compile_condition(node: Node, mapping: Mapping[str, str],
                      modifiers: Mapping[int, frozenset[str]] | None = None
                      ) -> Callable[[EventView], bool]:
    return ConditionCompiler(mapping, modifiers).compile(node)
