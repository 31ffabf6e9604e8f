"""The engine's fast path: one pass over each anchor field, then only the candidate rules.

Most rules require one field to equal, start with, end with or contain one of a few
literals: the rule's *anchor* (prefilter.py). ``build_dispatch`` indexes the anchors
of all rules of an event kind, per field, and generates one function
``match(doc) -> (matched, failed)`` that, for each event:

* reads and folds each anchor field once (getters.py, ``codegen.fold_value``);
* finds the rules whose anchor that text satisfies, all at once (anchors come from the
  condition: literals, a wildcard's longest literal part, a regex's required literals):
  equals in a dict,
  ``endswith`` literals that are one path component (``/crontab``) in a dict keyed by
  the text's last component, other prefixes and suffixes in one dict per literal length,
  ``contains`` literals with one Aho-Corasick automaton per field (``pyahocorasick``, C,
  linear in the text: all of a field's literals in one pass);
* runs only those rules and the rules without an anchor, each a generated function of
  its own over the event and the anchor texts (codegen.py writes the condition, so
  the reference matcher ``codegen.build_matcher`` and this one read the same tree).

A field with several texts (an array) makes every rule anchored on it a candidate (its
condition decides); an absent field makes none. The index only selects: a candidate's
own condition, anchor included, decides whether it matches; matches come back in the
order of the rules; each rule runs inside its own ``try``. Nothing is allocated for an
event beyond the candidate set and the lists returned. Literals see the whole text;
regexes and wildcards run through patterns.py with its text cap, as before.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Sequence
from typing import Any

import ahocorasick

from collector.detection.codegen import MatchFn, _expr, _Source
from collector.detection.expr import AllOf, AnyOf, Expr, TextTest
from collector.detection.modifiers import Kind, Pattern
from collector.detection.prefilter import indexable
from collector.detection.rules import DetectionRule

# Python's own regex parser, to read the literals out of a rule's regex (nothing else).
# It is private: should a Python lack it, regexes get no literals (their rules run on
# every event of their kind, as before).
try:
    sre_parse: Any = importlib.import_module("re._parser")
    sre: Any = importlib.import_module("re._constants")
except ImportError:
    sre_parse = sre = None
_LOCAL = re.compile(r"\b[rtf][0-9]+\b")  # the names _Source gives field locals


FieldKey = tuple[str, bool]  # (path, cased)
Anchors = dict[FieldKey, list[Pattern]]
_MAX_DEPTH = 64


def anchors(expr: Expr, depth: int = 0) -> Anchors | None:
    """Fields and literals one of which every match of expr satisfies, or None.

    A match of ``TextTest`` has a text of one of its paths satisfying one of its patterns
    (all literals: ``indexable``); of ``AnyOf``, a match of one of its parts (each needs
    anchors: their union); of ``AllOf``, a match of each part (the best part's anchors).
    ``NotOf`` and the other checks give no anchor.
    """
    if depth > _MAX_DEPTH:
        return None
    if isinstance(expr, TextTest):
        literals = _literal_patterns(expr.patterns)
        if literals is None:
            return None
        return {(path, expr.cased): literals for path in expr.paths}
    if isinstance(expr, AnyOf):
        union: Anchors = {}
        for arg in expr.args:
            found = anchors(arg, depth + 1)
            if found is None:
                return None
            for key, patterns in found.items():
                union.setdefault(key, []).extend(patterns)
        return union or None
    if isinstance(expr, AllOf):
        options = [a for a in (anchors(arg, depth + 1) for arg in expr.args) if a is not None]
        return max(options, key=_score) if options else None
    return None


def _literal_patterns(patterns: Sequence[Pattern]) -> list[Pattern] | None:
    """Literal patterns one of which every text matching one of patterns satisfies:
    the literals themselves, a wildcard's longest literal part, a regex's required
    literals (``required_literals``); None when a pattern has none."""
    out: list[Pattern] = []
    for pattern in patterns:
        if indexable((pattern,)):
            out.append(pattern)
        elif pattern.kind is Kind.WILDCARD and pattern.needle:
            out.append(Pattern(Kind.CONTAINS, pattern.needle, pattern.cased))
        elif pattern.kind is Kind.REGEX:
            found = required_literals(pattern.text)
            if found is None:
                return None
            out += [Pattern(Kind.CONTAINS, text, pattern.cased) for text in sorted(found)]
        else:
            return None
    return out


_MAX_CHOICES = 16


def required_literals(source: str) -> set[str] | None:
    """Texts one of which every match of the regex contains, or None (none known).

    From the top-level sequence of the parsed pattern: consecutive items that can only
    match a few literal texts (a character, a class of a few characters, a group or an
    alternation of such) make a run; anything else ends the run. Every match holds one
    text of each run; the run whose shortest text is longest is returned. A pattern that
    ignores case, or sets flags inside, gives None.
    """
    if sre_parse is None:
        return None
    try:
        parsed = sre_parse.parse(source)
    except Exception:  # what RE2 takes and Python's parser does not: no literals known
        return None
    if parsed.state.flags & (re.IGNORECASE | re.VERBOSE):
        return None
    runs: list[set[str]] = []
    current = {""}
    for op, av in parsed:
        choices = _choices(op, av, 0)
        joined = None if choices is None else {a + b for a in current for b in choices}
        if joined is None or len(joined) > _MAX_CHOICES:
            runs.append(current)
            current = choices if choices is not None else {""}
        else:
            current = joined
    runs.append(current)
    usable = [run for run in runs if all(run)]
    return max(usable, key=lambda run: min(map(len, run))) if usable else None


def _choices(op: Any, av: Any, depth: int) -> set[str] | None:
    """Every text one parsed item can match, when that is a few literals."""
    if depth > _MAX_DEPTH:
        return None
    if op is sre.LITERAL:
        return {chr(av)}
    if op is sre.IN:
        if len(av) <= _MAX_CHOICES and all(o is sre.LITERAL for o, _ in av):
            return {chr(v) for _, v in av}
        return None
    if op is sre.SUBPATTERN:
        _, add_flags, del_flags, items = av
        if add_flags or del_flags:
            return None
        return _sequence_choices(items, depth + 1)
    if op is sre.BRANCH:
        found: set[str] = set()
        for branch in av[1]:
            choices = _sequence_choices(branch, depth + 1)
            if choices is None:
                return None
            found |= choices
        return found if len(found) <= _MAX_CHOICES else None
    return None


def _sequence_choices(items: Any, depth: int) -> set[str] | None:
    found = {""}
    for op, av in items:
        choices = _choices(op, av, depth)
        if choices is None:
            return None
        found = {a + b for a in found for b in choices}
        if len(found) > _MAX_CHOICES:
            return None
    return found


def _score(found: Anchors) -> tuple[int, int, int]:
    """Higher is better: dict lookups beat contains, one field beats several, long
    literals beat short ones."""
    patterns = [p for group in found.values() for p in group]
    exact = all(p.kind is not Kind.CONTAINS for p in patterns)
    return (1 if exact else 0, -len(found), min(len(p.text) for p in patterns))


class _FieldIndex:
    """The anchors of one (path, cased): literal -> positions of the rules."""

    def __init__(self) -> None:
        self.positions: list[int] = []
        self.equals: dict[str, set[int]] = {}
        self.last_part: dict[str, set[int]] = {}  # "/name" suffixes, by the text's last "/"
        self.prefixes: dict[int, dict[str, set[int]]] = {}
        self.suffixes: dict[int, dict[str, set[int]]] = {}
        self.contains: dict[str, set[int]] = {}

    def add(self, position: int, kind: Kind, text: str) -> None:
        if kind is Kind.EQUALS:
            table = self.equals
        elif kind is Kind.SUFFIX and text.rfind("/") == 0:
            table = self.last_part
        elif kind is Kind.SUFFIX:
            table = self.suffixes.setdefault(len(text), {})
        elif kind is Kind.PREFIX:
            table = self.prefixes.setdefault(len(text), {})
        else:
            assert kind is Kind.CONTAINS, kind
            table = self.contains
        table.setdefault(text, set()).add(position)


def _frozen(table: dict[str, set[int]]) -> dict[str, tuple[int, ...]]:
    return {text: tuple(sorted(found)) for text, found in table.items()}


def _automaton(needles: dict[str, set[int]]) -> Any:
    auto = ahocorasick.Automaton(ahocorasick.STORE_ANY, ahocorasick.KEY_STRING)
    for needle, found in needles.items():
        auto.add_word(needle, tuple(sorted(found)))
    auto.make_automaton()
    return auto


def _index_source(src: _Source, local: str, index: _FieldIndex) -> list[str]:
    """Statements adding to ``c`` the positions of the rules whose anchor on this field
    the event satisfies (``local`` holds the field's text, or texts)."""
    lines = [f"if {local}.__class__ is str:"]
    if index.equals:
        lines += [f"    x = {src.bind(_frozen(index.equals))}.get({local})",
                  "    if x: c.update(x)"]
    if index.last_part:
        lines += [f"    i = {local}.rfind('/')", "    if i >= 0:",
                  f"        x = {src.bind(_frozen(index.last_part))}.get({local}[i:])",
                  "        if x: c.update(x)"]
    for method, tables, cut in (("startswith", index.prefixes, "[:{}]"),
                                ("endswith", index.suffixes, "[-{}:]")):
        if not tables:
            continue
        every = tuple(sorted(text for table in tables.values() for text in table))
        lines.append(f"    if {local}.{method}({src.bind(every)}):")  # one C call: usually no
        for size, table in sorted(tables.items()):
            lines += [f"        x = {src.bind(_frozen(table))}.get({local}{cut.format(size)})",
                      "        if x: c.update(x)"]
    if index.contains:
        lines += [f"    for x in {src.bind(_automaton(index.contains))}.iter({local}):",
                  "        c.update(x[1])"]
    lines += [f"elif {local}:", f"    c.update({src.bind(tuple(index.positions))})"]
    return lines


def _eager(src: _Source, local: str, filled: set[str]) -> list[str]:
    """Statements filling an anchor field's texts (its raw value once, for both cased
    and folded texts): a plain str is folded inline."""
    raw, convert = src._converted[local]
    lines = [] if raw in filled else [f"{raw} = {src._getter[raw]}(doc)"]
    filled.add(raw)
    if convert == "_fold":
        return [*lines, f"{local} = ({raw}.lower() if {raw}.isascii() else _fold({raw})) "
                        f"if {raw}.__class__ is str else _fold({raw})"]
    return [*lines, f"{local} = {raw} if {raw}.__class__ is str else _text({raw})"]


def _rule_function(src: _Source, name: str, rule: DetectionRule, params: Sequence[str]
                   ) -> str:
    """``def name(doc, *params)``: does the rule match (exceptions propagate)?"""
    header = f"def {name}({', '.join(['doc', *params])}):"
    if rule.condition is None:  # built by hand, not by the loader: its closure decides
        return f"{header}\n    return {src.bind(rule, '_R')}.match(_View(doc))"
    test = _expr(src, rule.condition)
    used = sorted(set(_LOCAL.findall(test)) - set(params))
    lines = [header]
    if used:
        lines.append(f"    {' = '.join(used)} = _U")
    lines.append(f"    return {test}")
    return "\n".join(lines)


def generate(rules: Sequence[DetectionRule]) -> tuple[str, dict[str, Any]]:
    """Source of the module defining ``match`` for rules, and its namespace."""
    src = _Source()
    indexes: dict[tuple[str, bool], _FieldIndex] = {}
    always: list[int] = []
    for position, rule in enumerate(rules):
        found = None if rule.condition is None else anchors(rule.condition)
        if found is None:
            always.append(position)
            continue
        for key, patterns in found.items():
            index = indexes.setdefault(key, _FieldIndex())
            index.positions.append(position)
            for pattern in patterns:
                index.add(position, pattern.kind, pattern.text)
    params = [src.texts(path, cased) for path, cased in indexes]
    functions: list[str] = []
    table: list[tuple[Any, DetectionRule]] = []
    for position, rule in enumerate(rules):
        name = f"_rule{position}"
        functions.append(_rule_function(src, name, rule, params))
        table.append((name, rule))
    body = ["def match(doc):"]
    filled: set[str] = set()
    for local in params:
        body += ["    " + line for line in _eager(src, local, filled)]
    body.append(f"    c = set({src.bind(tuple(always))})")
    for local, index in zip(params, indexes.values(), strict=True):
        body += ["    " + line for line in _index_source(src, local, index)]
    call = ", ".join(["doc", *params])
    body += ["    hits = []", "    bad = []", "    for i in sorted(c):",
             "        fn, rule = _T[i]", "        try:", f"            if fn({call}):",
             "                hits.append(rule)", "        except Exception:",
             "            _fail(bad, rule)", "    return hits, bad"]
    # the locals of match: only the anchor texts and their raw values
    inits = sorted(set(_LOCAL.findall("\n".join(body))))
    if inits:
        body.insert(1, f"    {' = '.join(inits)} = _U")
    table_source = "_T = (" + "".join(f"({name}, {src.bind(rule, '_R')}), "
                                      for name, rule in table) + ")"
    source = "\n\n".join([*src.getters, *functions, table_source, "\n".join(body)]) + "\n"
    return source, src.ns


def build_dispatch(rules: Sequence[DetectionRule]) -> MatchFn:
    """The indexed ``match`` for rules (in this order)."""
    source, namespace = generate(rules)
    exec(compile(source, "<sisguard-dispatch>", "exec"), namespace)  # our own source
    match: MatchFn = namespace["match"]
    return match
