"""The one way OS bytes become document text: always valid, always reversible."""

from __future__ import annotations

import json
import os

from hypothesis import given
from hypothesis import strategies as st

from common.text import escape_bytes, is_valid_text, os_bytes, os_text, unescape

# Bytes rich in the characters that matter: backslashes, 'x', hex digits, invalid bytes.
tricky = st.lists(st.sampled_from([b"\\", b"x", b"f", b"F", b"0", b"\xff", b"\xc3", b"\xa9",
                                   b"\xed\xa0\x80", b"a", "é".encode(), b"\x00"]),
                  max_size=24).map(b"".join)
any_bytes = st.one_of(st.binary(max_size=64), tricky)


@given(any_bytes)
def test_round_trip_and_always_valid(raw: bytes) -> None:
    text = escape_bytes(raw)
    assert is_valid_text(text)
    json.dumps(text, ensure_ascii=False).encode("utf-8")
    assert unescape(text) == raw


@given(any_bytes)
def test_os_text_of_fsdecoded_str_equals_bytes(raw: bytes) -> None:
    as_str = os.fsdecode(raw)
    assert os_text(as_str) == escape_bytes(raw)
    assert os_bytes(as_str) == raw


@given(st.text(max_size=40))
def test_os_text_of_any_str_is_valid(value: str) -> None:
    text = os_text(value)
    assert is_valid_text(text)
    assert unescape(text) == os_bytes(value)


def test_valid_text_without_escapes_is_unchanged() -> None:
    for s in ["/var/www/index.php", "Sở Thông tin và Truyền thông", "grep 'a\\|b' f", "C:\\dir"]:
        assert escape_bytes(s.encode()) == s
        assert os_text(s) == s


def test_documented_examples() -> None:
    assert escape_bytes(b"x\xffy") == "x\\xffy"
    assert escape_bytes(b"\\xff") == "\\\\xff"          # the text \xff, not the byte
    assert escape_bytes(b"\\\xff") == "\\\\\\xff"       # a backslash, then the byte
    assert unescape("\\\\xff") == b"\\xff"
    assert unescape("\\\\\\xff") == b"\\\xff"
    assert os_text("\ud800") == "\\xed\\xa0\\x80"       # a lone surrogate from JSON
