"""Skip rules that cannot match an event without calling them.

Most Sigma rules require one field to equal, start with, end with or contain one of a
few literals (``Image|endswith: /crontab``, ``CommandLine|contains: base64 -d``): the
rule's *anchor* (conditions.py finds it). Per field we index the anchors of all rules:
equals and prefix/suffix literals in dicts keyed by text (one lookup per distinct
length), contains literals by one of their 3-grams. For an event we look its field
values up once and get the few rules worth trying; rules without an anchor are always
tried. The index only ever adds candidates; the compiled rule still decides.
The engine's generated code (codegen.py) uses the same anchors as per-field gates;
``Prefilter`` serves the closure fallback (``codegen.closure_matcher``).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from collector.detection.matcher import EventView
from collector.detection.modifiers import Kind, Pattern

GRAM = 3


@dataclass(frozen=True)
class Anchor:
    """The rule matches only if ``path`` (folded unless cased) satisfies a pattern."""

    path: str
    cased: bool
    patterns: tuple[Pattern, ...]


def indexable(patterns: Sequence[Pattern]) -> bool:
    return bool(patterns) and all(
        p.kind in (Kind.EQUALS, Kind.PREFIX, Kind.SUFFIX, Kind.CONTAINS) and p.text
        for p in patterns)


def anchor_score(anchor: Anchor) -> tuple[int, int]:
    """Higher is better: dict lookups beat 3-grams, longer literals beat short ones."""
    exact = all(p.kind is not Kind.CONTAINS for p in anchor.patterns)
    return (1 if exact else 0, min(len(p.text) for p in anchor.patterns))


@dataclass
class _FieldIndex:
    equals: dict[str, set[int]] = field(default_factory=dict)
    prefixes: dict[int, dict[str, set[int]]] = field(default_factory=dict)
    suffixes: dict[int, dict[str, set[int]]] = field(default_factory=dict)
    grams: dict[str, list[tuple[str, set[int]]]] = field(default_factory=dict)
    short: list[tuple[str, set[int]]] = field(default_factory=list)  # contains, < GRAM chars

    def add(self, pattern: Pattern, rule: int, gram_counts: Counter[str]) -> None:
        text = pattern.text
        if pattern.kind is Kind.EQUALS:
            self.equals.setdefault(text, set()).add(rule)
        elif pattern.kind is Kind.PREFIX:
            self.prefixes.setdefault(len(text), {}).setdefault(text, set()).add(rule)
        elif pattern.kind is Kind.SUFFIX:
            self.suffixes.setdefault(len(text), {}).setdefault(text, set()).add(rule)
        elif len(text) < GRAM:
            self.short.append((text, {rule}))
        else:
            grams = [text[i:i + GRAM] for i in range(len(text) - GRAM + 1)]
            rarest = min(grams, key=lambda g: gram_counts[g])
            self.grams.setdefault(rarest, []).append((text, {rule}))

    def candidates(self, text: str, out: set[int]) -> None:
        hit = self.equals.get(text)
        if hit:
            out |= hit
        for size, table in self.prefixes.items():
            hit = table.get(text[:size])
            if hit:
                out |= hit
        for size, table in self.suffixes.items():
            hit = table.get(text[-size:])
            if hit:
                out |= hit
        for needle, rules in self.short:
            if needle in text:
                out |= rules
        if self.grams:
            grams = self.grams
            for gram in {text[i:i + GRAM] for i in range(len(text) - GRAM + 1)}:
                entries = grams.get(gram)
                if entries:
                    for needle, rules in entries:
                        if needle in text:
                            out |= rules


class Prefilter:
    """Candidate rule positions (into the list it was built from) for an event."""

    def __init__(self, anchors: Sequence[Anchor | None]) -> None:
        self.always = frozenset(i for i, a in enumerate(anchors) if a is None)
        self._always_sorted = sorted(self.always)
        counts: Counter[str] = Counter()
        for anchor in anchors:
            for p in anchor.patterns if anchor else ():
                if p.kind is Kind.CONTAINS:
                    counts.update({p.text[i:i + GRAM] for i in range(len(p.text) - GRAM + 1)})
        self.fields: dict[tuple[str, bool], _FieldIndex] = {}
        for position, anchor in enumerate(anchors):
            if anchor is None:
                continue
            index = self.fields.setdefault((anchor.path, anchor.cased), _FieldIndex())
            for pattern in anchor.patterns:
                index.add(pattern, position, counts)

    def candidates(self, view: EventView) -> list[int]:
        if not self.fields:
            return self._always_sorted
        found = set(self.always)
        for (path, cased), index in self.fields.items():
            for text in view.texts(path) if cased else view.folded(path):
                index.candidates(text, found)
        return sorted(found)
