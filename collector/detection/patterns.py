"""Rule patterns that match in linear time: RE2, over a capped text.

A rule's ``|re`` regexes and its wildcards (``*``/``?`` anywhere but at the ends) run on
command lines and paths an attacker chose; a backtracking engine can take seconds on a
few hundred characters (``'*a*a*a*b'``). Here they are compiled by RE2 (``google-re2``),
whose matching time is linear in the text, and each text given to them is cut to
``TEXT_CAP[0]`` characters (64 KiB by default; ``detection.max_pattern_text``), every cut
counted (``capped_texts()``). Plain literals (equals, prefix, suffix, contains) are not
patterns: they see the whole text.

RE2 takes Python's syntax except what needs backtracking: backreferences (``\\1``,
``(?P=name)``), lookaround (``(?=``, ``(?!``, ``(?<=``, ``(?<!``), atomic groups and
possessive repetition, ``\\Z``. A rule using one is refused at load (the loader reports
it with its file and line, so ``sisguard-rules lint`` does): there is no fallback to a
backtracking engine, since no cap on the text makes backtracking safe.
"""

from __future__ import annotations

import itertools
from typing import Any

import re2
from re2 import _re2

DEFAULT_TEXT_CAP = 64 * 1024
TEXT_CAP = [DEFAULT_TEXT_CAP]  # characters; set once from the configuration
_CAPPED = itertools.count()  # next() is atomic under the GIL; += on an int is not
_UNANCHORED: Any = re2._Anchor.UNANCHORED
_BOTH: Any = re2._Anchor.ANCHOR_BOTH

# Why RE2 refuses a pattern, by what the pattern contains (the first that applies).
_WHY = (
    (("(?=", "(?!", "(?<=", "(?<!"), "lookaround"),
    (("(?P=", "\\1", "\\2", "\\3", "\\4", "\\5", "\\6", "\\7", "\\8", "\\9"),
     "a backreference"),
    (("(?>", "*+", "++", "?+", "}+"), "an atomic group or possessive repetition"),
)


class NotLinear(ValueError):
    """A pattern RE2 cannot take; says why (``reason``) and what the engine does."""

    def __init__(self, source: str, reason: str) -> None:
        super().__init__(f"RE2 cannot take {source!r} ({reason}): the engine refuses the "
                         "rule, it only runs patterns that match in linear time")
        self.source = source
        self.reason = reason


def set_text_cap(characters: int) -> None:
    if characters < 1:
        raise ValueError(f"the pattern text cap must be positive, not {characters}")
    TEXT_CAP[0] = characters


def capped_texts() -> int:
    """How many texts were cut to TEXT_CAP before a pattern saw them."""
    return int(_CAPPED.__reduce__()[1][0])


def _why(source: str, error: str) -> str:
    for markers, reason in _WHY:
        if any(m in source for m in markers):
            return reason
    return error or "not RE2 syntax"


def not_linear(source: str, error: str) -> NotLinear:
    """The error for a pattern RE2 refused with ``error``: says why in a rule's terms."""
    return NotLinear(source, _why(source, error))


def _encode(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass")


class LinearPattern:
    """A compiled RE2 pattern: ``search``/``fullmatch`` give True or None, like a
    ``re.Pattern``'s match or None."""

    __slots__ = ("_rx", "source")

    def __init__(self, source: str, *, dotall: bool = False) -> None:
        options = re2.Options()
        options.log_errors = False
        options.never_capture = True
        options.dot_nl = dotall
        try:
            rx = _re2.RE2(_encode(source), options)
        except Exception as e:  # what the binding raises is not documented
            raise NotLinear(source, str(e)) from e
        if not rx.ok():
            raise not_linear(source, rx.error().decode("utf-8", "replace"))
        self._rx = rx
        self.source = source

    def _run(self, anchor: Any, text: str) -> bool | None:
        cap = TEXT_CAP[0]
        if len(text) > cap:
            text = text[:cap]
            next(_CAPPED)
        data = _encode(text)
        return True if self._rx.Match(anchor, data, 0, len(data))[0][0] >= 0 else None

    def search(self, text: str) -> bool | None:
        return self._run(_UNANCHORED, text)

    def fullmatch(self, text: str) -> bool | None:
        return self._run(_BOTH, text)

    def __repr__(self) -> str:
        return f"LinearPattern({self.source!r})"
