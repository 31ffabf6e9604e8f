"""One generated Python function per set of candidate rules: the engine's hot path.

For the rules an event kind may trigger (logsources.py), ``build_matcher`` writes the
source of one function ``match(doc) -> (matched, failed)`` and compiles it once:

* each field is looked up at most once per event, lazily (the first test that needs
  it fills a local), with a compiled getter (getters.py); texts and folded texts are a
  ``str`` for the usual single value, a ``tuple`` otherwise;
* each rule is an ``if`` over those locals (expr.py tree), its literals bound in the
  function's globals as frozensets, tuples and precompiled regexes, the cheap parts
  of an AND first, ORs of numbers or CIDRs on one field merged into one test;
* rules anchored on the same field (prefilter.py) share a gate: one combined test of
  the field (a set lookup, ``startswith``/``endswith`` of a tuple, one alternation)
  computed once; when it fails, none of those rules is looked at further;
* each rule runs inside its own ``try``; matches come back in the order of the rules.

Only rule values reach the source text, and only as ``repr()`` of a ``str`` (field path
parts, short literals) or as names bound in the namespace; nothing from an event is
ever compiled. ``closure_matcher`` is the same contract over ``DetectionRule.match``,
the fallback should generation ever fail.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from collector.detection.expr import AllOf, AnyOf, Expr, NotOf, RawCheck, TextsCheck, TextTest
from collector.detection.fieldmap import MISSING
from collector.detection.getters import getter_source, literal
from collector.detection.matcher import EventView, cidrs_test, lookup, numbers_test, texts_of
from collector.detection.modifiers import (
    Kind,
    Pattern,
    PatternSet,
    fold,
    pattern_set,
    text_predicate,
)
from collector.detection.prefilter import Prefilter
from collector.detection.rules import DetectionRule
from common.logs import get_logger

log = get_logger("sisguard.collector.detection")

Matched = tuple[list[DetectionRule], list[DetectionRule]]
MatchFn = Callable[[Mapping[str, Any]], Matched]

_INLINE_CONTAINS = 4  # up to this many needles: ``in`` tests, beyond: one regex


class _Unset:
    def __repr__(self) -> str:
        return "UNSET"


_UNSET = _Unset()


def fold_value(raw: Any) -> str | tuple[str, ...]:
    """Folded texts of a raw field value: the text itself when there is exactly one."""
    if raw.__class__ is str:
        return raw.lower() if raw.isascii() else fold(raw)
    if raw is MISSING:
        return ()
    texts = tuple(map(fold, texts_of(raw)))
    return texts[0] if len(texts) == 1 else texts


def text_value(raw: Any) -> str | tuple[str, ...]:
    """Texts of a raw field value: the text itself when there is exactly one."""
    if raw.__class__ is str:
        return raw
    if raw is MISSING:
        return ()
    texts = texts_of(raw)
    return texts[0] if len(texts) == 1 else texts


def any_text(pred: Callable[[str], object], texts: tuple[str, ...]) -> bool:
    return any(pred(t) for t in texts)


def as_tuple(value: str | tuple[str, ...]) -> tuple[str, ...]:
    return value if value.__class__ is tuple else (value,)  # type: ignore[return-value]


def rule_failed(failed: list[DetectionRule], rule: DetectionRule) -> None:
    """Called from inside the generated ``except``: logs the exception being handled."""
    failed.append(rule)
    log.exception("detection: rule failed on event", rule=rule.meta.id)


class _Source:
    """Names, locals and helper functions of one generated module."""

    def __init__(self) -> None:
        self.ns: dict[str, Any] = {
            "_U": _UNSET, "_M": MISSING, "_lookup": lookup, "_fold": fold_value,
            "_text": text_value, "_anyt": any_text, "_tup": as_tuple, "_fail": rule_failed,
            "_View": EventView,
        }
        self._bound: dict[int, str] = {}
        self.getters: list[str] = []
        self.locals: list[str] = []
        self._raw: dict[str, str] = {}  # path -> local
        self._texts: dict[tuple[str, bool], str] = {}  # (path, cased) -> local
        self._getter: dict[str, str] = {}  # raw local -> getter function
        self._converted: dict[str, tuple[str, str]] = {}  # texts local -> (raw, convert)

    def bind(self, value: object, prefix: str = "_c") -> str:
        name = self._bound.get(id(value))
        if name is None:
            name = f"{prefix}{len(self.ns)}"
            self.ns[name] = value
            self._bound[id(value)] = name
        return name

    def raw(self, path: str) -> str:
        local = self._raw.get(path)
        if local is None:
            getter = f"_get{len(self.getters)}"
            self.getters.append(getter_source(getter, path))
            local = self._raw[path] = f"r{len(self.locals)}"
            self.locals.append(local)
            self._getter[local] = getter
        return local

    def texts(self, path: str, cased: bool) -> str:
        local = self._texts.get((path, cased))
        if local is None:
            raw = self.raw(path)
            local = self._texts[(path, cased)] = f"{'t' if cased else 'f'}{len(self.locals)}"
            self.locals.append(local)
            self._converted[local] = (raw, "_text" if cased else "_fold")
        return local

    def lazy(self, local: str) -> str:
        """An expression with the value of local, filling it first if need be."""
        getter = self._getter.get(local)
        if getter is not None:
            return f"({local} if {local} is not _U else ({local} := {getter}(doc)))"
        raw, convert = self._converted[local]
        return f"({local} if {local} is not _U else ({local} := {convert}({self.lazy(raw)})))"

    def load(self, local: str) -> list[str]:
        """Statements that fill local unless this event already did."""
        getter = self._getter.get(local)
        if getter is not None:
            return [f"if {local} is _U: {local} = {getter}(doc)"]
        raw, convert = self._converted[local]
        return [f"if {local} is _U:", f"    if {raw} is _U: {raw} = {self._getter[raw]}(doc)",
                f"    {local} = {convert}({raw})"]


def _inline(src: _Source, var: str, ps: PatternSet) -> str:
    """A Python expression: does the text in var match any pattern of ps?"""
    tests: list[str] = []
    if len(ps.equals) == 1:
        tests.append(f"{var} == {literal(next(iter(ps.equals)))}")
    elif ps.equals:
        tests.append(f"{var} in {src.bind(ps.equals)}")
    for method, texts in (("startswith", ps.prefixes), ("endswith", ps.suffixes)):
        if texts:
            arg = literal(texts[0]) if len(texts) == 1 else src.bind(texts)
            tests.append(f"{var}.{method}({arg})")
    if ps.contains_re is not None and len(ps.contains) > _INLINE_CONTAINS:
        tests.append(f"{src.bind(ps.contains_re)}.search({var}) is not None")
    else:
        tests.extend(f"{literal(needle)} in {var}" for needle in ps.contains)
    if ps.wildcard is not None:
        full = f"{src.bind(ps.wildcard)}.fullmatch({var}) is not None"
        if ps.wildcard_needles:  # no needle in the text: no wildcard can match
            needles = " or ".join(f"{literal(n)} in {var}" for n in ps.wildcard_needles)
            full = f"(({needles}) and {full})"
        tests.append(full)
    tests.extend(f"{src.bind(r)}.search({var}) is not None" for r in ps.regexes)
    return f"({' or '.join(tests)})" if tests else "False"


def _text_test(src: _Source, local: str, patterns: Sequence[Pattern], *,
               lazy: bool = False) -> str:
    """Any text in local (a str, or a tuple of them) matches any of the patterns.

    With lazy, local is filled on the way if this event has not needed it yet.
    """
    pred = src.bind(text_predicate(patterns))
    first = src.lazy(local) if lazy else local
    return (f"(({local} and _anyt({pred}, {local})) if {first}.__class__ is tuple "
            f"else {_inline(src, local, pattern_set(patterns))})")


def _merge_numbers(args: Sequence[Expr]) -> list[Expr]:
    """In an OR, ``field: n1``, ``field: n2``... become one set test per field, and
    ``field|cidr: [a, b]`` one test parsing each address once."""
    numbers: dict[str, list[float]] = {}
    networks: dict[str, list[Any]] = {}
    for arg in args:
        if _is_number(arg):
            assert isinstance(arg, RawCheck) and arg.number is not None
            numbers.setdefault(arg.path, []).append(arg.number)
        elif isinstance(arg, TextsCheck) and arg.network is not None:
            networks.setdefault(arg.paths[0], []).append(arg.network)
    merged: list[Expr] = []
    done: set[tuple[str, str]] = set()
    for arg in args:
        if _is_number(arg):
            assert isinstance(arg, RawCheck)
            if ("n", arg.path) not in done:
                done.add(("n", arg.path))
                merged.append(RawCheck(arg.path, numbers_test(numbers[arg.path])))
        elif isinstance(arg, TextsCheck) and arg.network is not None:
            path = arg.paths[0]
            if ("c", path) not in done:
                done.add(("c", path))
                merged.append(TextsCheck(arg.paths, True, cidrs_test(networks[path])))
        else:
            merged.append(arg)
    return merged


def _is_number(arg: Expr) -> bool:
    return isinstance(arg, RawCheck) and arg.number is not None and arg.number == arg.number


def _cost(expr: Expr) -> int:
    """A rough price of evaluating expr, to try the cheap parts of an AND first."""
    if isinstance(expr, TextTest):
        slow = any(p.kind in (Kind.WILDCARD, Kind.REGEX) for p in expr.patterns)
        return len(expr.paths) * (4 if slow else 1)
    if isinstance(expr, RawCheck):
        return 2
    if isinstance(expr, TextsCheck):
        return 8
    if isinstance(expr, NotOf):
        return _cost(expr.arg)
    if isinstance(expr, AnyOf):
        return sum(_cost(arg) for arg in _merge_numbers(expr.args))
    return sum(_cost(arg) for arg in expr.args)


def _expr(src: _Source, expr: Expr) -> str:
    """Source of expr over field locals, each filled when first evaluated."""
    if isinstance(expr, TextTest):
        tests = [_text_test(src, src.texts(path, expr.cased), expr.patterns, lazy=True)
                 for path in expr.paths]
        return tests[0] if len(tests) == 1 else f"({' or '.join(tests)})"
    if isinstance(expr, RawCheck):
        return f"{src.bind(expr.test)}({src.lazy(src.raw(expr.path))})"
    if isinstance(expr, TextsCheck):
        args = [f"_tup({src.lazy(src.texts(path, expr.cased))})" for path in expr.paths]
        return f"{src.bind(expr.test)}({', '.join(args)})"
    if isinstance(expr, NotOf):
        return f"(not {_expr(src, expr.arg)})"
    if isinstance(expr, AllOf):
        # Conditions are pure: any order gives the same answer, cheap tests first.
        parts = [_expr(src, arg) for arg in sorted(expr.args, key=_cost)]
        return f"({' and '.join(parts)})" if parts else "True"
    assert isinstance(expr, AnyOf)
    parts = [_expr(src, arg) for arg in _merge_numbers(expr.args)]
    return f"({' or '.join(parts)})" if parts else "False"


def _guarded(src: _Source, rule: DetectionRule, test: str | None) -> list[str]:
    """A rule's statements: if test (an anchor pre-check) and its condition, a hit."""
    name = src.bind(rule, "_R")
    if rule.condition is None:  # built by hand, not by the loader: use its closure
        body = ["if ev is _U: ev = _View(doc)", f"if {name}.match(ev):",
                f"    hits.append({name})"]
    else:
        body = [f"if {_expr(src, rule.condition)}:", f"    hits.append({name})"]
        if test is not None:
            body = [f"if {test}:", *("    " + line for line in body)]
    return ["try:", *("    " + line for line in body), "except Exception:",
            f"    _fail(bad, {name})"]


def _anchored_group(src: _Source, key: tuple[str, bool], rules: Sequence[DetectionRule]
                    ) -> list[str]:
    """Rules anchored on one field: one gate for all, then each rule's own anchor.

    A single text (the usual case) goes through the gate; several texts skip the
    anchor tests (each condition decides); no text at all cannot satisfy any anchor.
    """
    local = src.texts(*key)
    union = [p for r in rules if r.anchor is not None for p in r.anchor.patterns]
    lines = [*src.load(local), f"if {local}.__class__ is str:"]
    lines.append(f"    if {_inline(src, local, pattern_set(union))}:")
    for rule in rules:
        assert rule.anchor is not None
        test = None if len(rules) == 1 else _inline(src, local, pattern_set(rule.anchor.patterns))
        lines += ["        " + line for line in _guarded(src, rule, test)]
    lines.append(f"elif {local}:")
    for rule in rules:
        lines += ["    " + line for line in _guarded(src, rule, None)]
    return lines


def generate(rules: Sequence[DetectionRule]) -> tuple[str, dict[str, Any]]:
    """Source of the module defining ``match`` for rules, and its namespace.

    Rules are grouped by anchor field (rules without one run on their own); matches
    are put back in the order of rules, the order the engine reports them in.
    """
    src = _Source()
    groups: dict[tuple[str, bool] | None, list[DetectionRule]] = {}
    for rule in rules:
        anchored = rule.anchor is not None and rule.condition is not None
        key = (rule.anchor.path, rule.anchor.cased) if rule.anchor and anchored else None
        groups.setdefault(key, []).append(rule)
    blocks: list[str] = []
    for key, members in groups.items():
        if key is None:
            for rule in members:
                blocks += _guarded(src, rule, None)
        else:
            blocks += _anchored_group(src, key, members)
    order = {id(rule): position for position, rule in enumerate(rules)}
    src.ns["_order"] = lambda rule: order[id(rule)]
    names = [*src.locals, "ev"]
    lines = ["def match(doc):", "    hits = []", "    bad = []",
             f"    {' = '.join(names)} = _U",
             *("    " + line for line in blocks),
             "    if len(hits) > 1:", "        hits.sort(key=_order)",
             "    return hits, bad"]
    return "\n\n".join([*src.getters, "\n".join(lines)]) + "\n", src.ns


def build_matcher(rules: Sequence[DetectionRule]) -> MatchFn:
    """The generated ``match`` for rules (in this order)."""
    source, namespace = generate(rules)
    code = compile(source, "<sisguard-rules>", "exec")
    exec(code, namespace)  # our own generated source; rule values are bound by name
    match: MatchFn = namespace["match"]
    return match


def closure_matcher(rules: Sequence[DetectionRule]) -> MatchFn:
    """The same contract through the prefilter and each rule's closure (reference)."""
    ordered = tuple(rules)
    prefilter = Prefilter([r.anchor for r in ordered])

    def match(doc: Mapping[str, Any]) -> Matched:
        view = EventView(doc)
        hits: list[DetectionRule] = []
        bad: list[DetectionRule] = []
        for position in prefilter.candidates(view):
            rule = ordered[position]
            try:
                if rule.match(view):
                    hits.append(rule)
            except Exception:
                rule_failed(bad, rule)
        return hits, bad
    return match
