"""String values of Sigma rules as text patterns, and fast predicates over them.

pySigma applies the value modifiers (contains, startswith, endswith, base64, windash, ...)
and hands us ``SigmaString`` values with wildcard parts. Here each becomes a ``Pattern``
(equals / prefix / suffix / contains / wildcard / regex) over *folded* text (Unicode
casefold + NFC) unless the value is cased, and a list of patterns on the same field
becomes one predicate (a set lookup, ``str.endswith(tuple)``, one alternation regex).
Wildcards and regexes are RE2 patterns (patterns.py): linear time, over a capped text.
"""

from __future__ import annotations

import enum
import re
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sigma.modifiers import modifier_mapping
from sigma.types import (
    Placeholder,
    SigmaRegularExpression,
    SigmaRegularExpressionFlag,
    SigmaString,
    SpecialChars,
)

from collector.detection.patterns import LinearPattern, NotLinear

# Modifiers we refuse, with why. Every other pySigma modifier is supported.
UNSUPPORTED_MODIFIERS: dict[str, str] = {
    "expand": "placeholders need a processing pipeline",
    "minute": "timestamp-part matching is not implemented",
    "hour": "timestamp-part matching is not implemented",
    "day": "timestamp-part matching is not implemented",
    "week": "timestamp-part matching is not implemented",
    "month": "timestamp-part matching is not implemented",
    "year": "timestamp-part matching is not implemented",
}
# Values produced by these modifiers are encodings: compare them case-sensitively.
ENCODING_MODIFIERS = frozenset({"base64", "base64offset", "wide", "utf16", "utf16be"})
MODIFIER_NAMES: dict[type[Any], str] = {cls: name for name, cls in modifier_mapping.items()}

TextPredicate = Callable[[str], object]


class UnsupportedConstruct(ValueError):
    """A Sigma construct the engine does not implement; names the construct."""

    def __init__(self, construct: str, reason: str, *, field: str | None = None) -> None:
        super().__init__(f"unsupported: {construct}: {reason}")
        self.construct = construct
        self.reason = reason
        self.field = field


def fold(text: str) -> str:
    """Case-insensitive form of a text: casefold, and NFC for non-ASCII text."""
    if text.isascii():
        return text.lower()
    return unicodedata.normalize("NFC", unicodedata.normalize("NFC", text).casefold())


class Kind(enum.Enum):
    EQUALS = "equals"
    PREFIX = "prefix"
    SUFFIX = "suffix"
    CONTAINS = "contains"
    WILDCARD = "wildcard"  # text is a regex source, fullmatch
    REGEX = "regex"  # text is a regex source with inline flags, search


@dataclass(frozen=True)
class Pattern:
    kind: Kind
    text: str
    cased: bool
    needle: str = ""  # WILDCARD: its longest literal part, which every match contains


def string_pattern(value: SigmaString, *, cased: bool) -> Pattern:
    """The pattern a (wildcarded) Sigma string means."""
    norm: Callable[[str], str] = (lambda s: s) if cased else fold
    parts: list[str | SpecialChars] = []
    for part in value.s:
        if isinstance(part, Placeholder):
            raise UnsupportedConstruct(f"placeholder %{part.name}%",
                                       "placeholders need a processing pipeline")
        parts.append(norm(part) if isinstance(part, str) else part)
    multi = SpecialChars.WILDCARD_MULTI
    if all(isinstance(p, str) for p in parts):
        return Pattern(Kind.EQUALS, "".join(p for p in parts if isinstance(p, str)), cased)
    if len(parts) == 2 and parts[0] is multi and isinstance(parts[1], str):
        return Pattern(Kind.SUFFIX, parts[1], cased)
    if len(parts) == 2 and parts[1] is multi and isinstance(parts[0], str):
        return Pattern(Kind.PREFIX, parts[0], cased)
    if len(parts) == 3 and parts[0] is multi and parts[2] is multi and isinstance(parts[1], str):
        return Pattern(Kind.CONTAINS, parts[1], cased)
    source = "".join(
        re.escape(p) if isinstance(p, str) else (".*" if p is multi else ".") for p in parts)
    needle = max((p for p in parts if isinstance(p, str)), key=len, default="")
    return Pattern(Kind.WILDCARD, source, cased, needle)


_FLAGS = {
    SigmaRegularExpressionFlag.IGNORECASE: "i",
    SigmaRegularExpressionFlag.MULTILINE: "m",
    SigmaRegularExpressionFlag.DOTALL: "s",
}


def regex_pattern(value: SigmaRegularExpression) -> Pattern:
    """``|re``: a substring search over the original (unfolded) text."""
    source = str(value.regexp)
    flags = "".join(sorted(_FLAGS[f] for f in value.flags))
    try:
        re.compile(source)
    except re.error as e:
        raise UnsupportedConstruct("re", f"invalid regular expression {source!r}: {e}") from e
    text = f"(?{flags}:{source})" if flags else source
    try:
        LinearPattern(text)
    except NotLinear as e:
        raise UnsupportedConstruct("re", str(e)) from e
    return Pattern(Kind.REGEX, text, True)


def _any(preds: Sequence[TextPredicate]) -> TextPredicate:
    if len(preds) == 1:
        return preds[0]
    if len(preds) == 2:
        first, second = preds
        return lambda t: first(t) or second(t)
    return lambda t: any(p(t) for p in preds)


@dataclass(frozen=True)
class PatternSet:
    """Patterns on one field, grouped by kind and compiled: what a predicate tests."""

    equals: frozenset[str]
    prefixes: tuple[str, ...]
    suffixes: tuple[str, ...]
    contains: tuple[str, ...]
    contains_re: re.Pattern[str] | None  # one alternation, when there are several
    wildcard: LinearPattern | None  # fullmatch
    wildcard_needles: tuple[str, ...]  # one of these is in every match (or none known)
    regexes: tuple[LinearPattern, ...]  # search


def pattern_set(patterns: Sequence[Pattern]) -> PatternSet:
    contains = tuple(p.text for p in patterns if p.kind is Kind.CONTAINS)
    wildcards = [p.text for p in patterns if p.kind is Kind.WILDCARD]
    needles = tuple(p.needle for p in patterns if p.kind is Kind.WILDCARD)
    return PatternSet(
        equals=frozenset(p.text for p in patterns if p.kind is Kind.EQUALS),
        prefixes=tuple(p.text for p in patterns if p.kind is Kind.PREFIX),
        suffixes=tuple(p.text for p in patterns if p.kind is Kind.SUFFIX),
        contains=contains,
        contains_re=(re.compile("|".join(re.escape(c) for c in contains))
                     if len(contains) > 1 else None),
        wildcard=(LinearPattern("|".join(f"(?:{w})" for w in wildcards), dotall=True)
                  if wildcards else None),
        wildcard_needles=needles if all(needles) else (),
        regexes=tuple(LinearPattern(p.text) for p in patterns if p.kind is Kind.REGEX))


def text_predicate(patterns: Sequence[Pattern]) -> TextPredicate:
    """One predicate that is true when any of the patterns matches a text."""
    ps = pattern_set(patterns)
    equals, prefixes, suffixes, contains = ps.equals, ps.prefixes, ps.suffixes, ps.contains
    preds: list[TextPredicate] = []
    if equals:
        preds.append(equals.__contains__)
    if prefixes:
        preds.append(lambda t: t.startswith(prefixes))
    if suffixes:
        preds.append(lambda t: t.endswith(suffixes))
    if len(contains) == 1:
        (needle,) = contains
        preds.append(lambda t: needle in t)
    elif ps.contains_re is not None:
        preds.append(ps.contains_re.search)
    if ps.wildcard is not None:
        preds.append(ps.wildcard.fullmatch)
    preds.extend(r.search for r in ps.regexes)
    if not preds:
        return lambda t: False
    return _any(preds)
