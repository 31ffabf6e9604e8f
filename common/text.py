"""Text from the OS: bytes an attacker chose, made valid UTF-8 in one reversible way.

File names, link targets, command lines, working directories, user names and log lines
are bytes. Every sensor turns them into document text with :func:`os_text` (or
:func:`escape_bytes`), and nothing else: the result always encodes as UTF-8, whatever the
input, and :func:`unescape` gives back the exact bytes.

The scheme (documented for users in ``docs/events.md``):

* valid UTF-8 passes unchanged;
* each byte of an invalid sequence becomes ``\\xHH`` (two lower-case hex digits);
* so that this stays unambiguous, a run of backslashes that the original has right
  before ``xHH`` (any case) or before an invalid byte is doubled.

A decoder reads a run of *n* backslashes followed by ``xHH``: *n* odd means ``(n-1)/2``
backslashes and the byte ``HH``; *n* even means ``n/2`` backslashes and the text ``xHH``.
Backslashes anywhere else are left alone, so ordinary command lines (``grep 'a\\|b'``) and
paths read as they are.

A ``str`` given to :func:`os_text` is taken as the OS gave it to Python: lone surrogates
U+DC80..U+DCFF are the bytes 0x80..0xFF (``os.fsdecode``'s ``surrogateescape``), and any
other lone surrogate is escaped as the bytes of its (invalid) UTF-8 form.
"""

from __future__ import annotations

import codecs
import re

__all__ = ["escape_bytes", "is_valid_text", "os_bytes", "os_text", "unescape"]

# A backslash run before "xHH" or before a surrogate-escaped byte (0x80..0xff).
_ESCAPE = re.compile("(\\\\*)(?:(?=x[0-9a-fA-F]{2})|([\udc80-\udcff]))")
_DOUBLE_ONLY = re.compile(r"(\\+)(?=x[0-9a-fA-F]{2})")
_UNESCAPE = re.compile(r"(\\+)x([0-9a-fA-F]{2})")


def _raw_surrogates(exc: UnicodeError) -> tuple[bytes, int]:
    """Encode error handler: U+DC80..U+DCFF back to their byte, other surrogates as the
    bytes of their UTF-8 form (which is invalid, and is then escaped)."""
    if not isinstance(exc, UnicodeEncodeError):
        raise exc
    out = bytearray()
    for ch in exc.object[exc.start:exc.end]:
        code = ord(ch)
        if 0xDC80 <= code <= 0xDCFF:
            out.append(code - 0xDC00)
        else:
            out += ch.encode("utf-8", "surrogatepass")
    return bytes(out), exc.end


codecs.register_error("sisguard-raw-surrogates", _raw_surrogates)


def _escape_match(m: re.Match[str]) -> str:
    run, byte = m.group(1), m.group(2)
    if byte is None:
        return run * 2
    return f"{run * 2}\\x{ord(byte) - 0xDC00:02x}"


def escape_bytes(raw: bytes) -> str:
    """``raw`` as valid text: UTF-8 where it is, ``\\xHH`` for every invalid byte."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return _ESCAPE.sub(_escape_match, raw.decode("utf-8", "surrogateescape"))
    if "\\" not in text:
        return text
    return _DOUBLE_ONLY.sub(lambda m: m.group(1) * 2, text)


def os_bytes(value: str | bytes) -> bytes:
    """The bytes behind an OS string (the inverse of ``os.fsdecode``, for any str)."""
    if isinstance(value, bytes):
        return value
    return value.encode("utf-8", "sisguard-raw-surrogates")


def os_text(value: str | bytes) -> str:
    """Valid text for a value that came from the OS, as ``str`` (``os.fsdecode``) or bytes."""
    if isinstance(value, bytes):
        return escape_bytes(value)
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return escape_bytes(os_bytes(value))
    if "\\" not in value:
        return value
    return _DOUBLE_ONLY.sub(lambda m: m.group(1) * 2, value)


def unescape(text: str) -> bytes:
    """The exact bytes that :func:`escape_bytes` (or :func:`os_text`) was given."""
    out = bytearray()
    pos = 0
    for m in _UNESCAPE.finditer(text):
        out += text[pos:m.start()].encode("utf-8")
        run, hexdigits = m.group(1), m.group(2)
        out += b"\\" * (len(run) // 2)
        if len(run) % 2:
            out.append(int(hexdigits, 16))
        else:
            out += b"x" + hexdigits.encode("ascii")
        pos = m.end()
    out += text[pos:].encode("utf-8")
    return bytes(out)


def is_valid_text(value: str) -> bool:
    """True when ``value`` encodes as UTF-8 (no lone surrogates)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
