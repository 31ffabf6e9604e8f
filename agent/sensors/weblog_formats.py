"""Web server log lines -> named fields: the access-log formats and the error logs.

A format is a format string with nginx (``$remote_addr``) or Apache (``%h``) variables,
or one of the names in ``NAMED_FORMATS`` (``combined``, ``common``, ``vhost_combined``,
``json``, ``nginx_error``, ``apache_error``). A format string is compiled into one
regular expression in which every variable is followed by a literal, and matches
anything but that literal's first character (``[^ ]*`` before a space, ``[^\\]]*``
before ``]``) or, between double quotes, a quoted string with backslash escapes
(``[^"\\\\]*(?:\\\\.[^"\\\\]*)*``). Each step has one way to go, so a match or a failure costs
time linear in the line (no catastrophic backtracking, whatever the line holds).

``parse`` returns the fields under canonical names (``FIELD_NAMES``), or None when the
line does not have the format's shape.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass

from common.text import os_text, unescape

# canonical field names every format produces
FIELD_NAMES = ("client", "ident", "user", "time", "time_iso", "request", "method", "uri",
               "path", "query", "protocol", "status", "bytes", "referer", "agent", "vhost",
               "port", "request_time", "request_time_us", "content_type", "forwarded_for",
               "level", "message", "pid")

NGINX_VARIABLES = {
    "remote_addr": "client", "realip_remote_addr": "client", "remote_user": "user",
    "time_local": "time", "time_iso8601": "time_iso", "request": "request",
    "request_method": "method", "request_uri": "uri", "uri": "path", "args": "query",
    "query_string": "query", "server_protocol": "protocol", "status": "status",
    "body_bytes_sent": "bytes", "bytes_sent": "bytes", "http_referer": "referer",
    "http_user_agent": "agent", "host": "vhost", "server_name": "vhost",
    "http_host": "vhost", "server_port": "port", "request_time": "request_time",
    "content_type": "content_type", "http_content_type": "content_type",
    "http_x_forwarded_for": "forwarded_for",
}

APACHE_VARIABLES = {
    "h": "client", "a": "client", "l": "ident", "u": "user", "t": "time", "r": "request",
    "m": "method", "U": "path", "q": "query", "H": "protocol", "s": "status",
    "b": "bytes", "B": "bytes", "O": "bytes", "v": "vhost", "V": "vhost", "p": "port",
    "T": "request_time", "D": "request_time_us",
    "{referer}i": "referer", "{user-agent}i": "agent", "{host}i": "vhost",
    "{content-type}i": "content_type", "{x-forwarded-for}i": "forwarded_for",
}

NAMED_FORMATS = {
    "common": '%h %l %u %t "%r" %>s %b',
    "combined": '%h %l %u %t "%r" %>s %b "%{Referer}i" "%{User-Agent}i"',
    "vhost_combined": '%v:%p %h %l %u %t "%r" %>s %O "%{Referer}i" "%{User-Agent}i"',
}
SPECIAL_FORMATS = ("json", "nginx_error", "apache_error")
QUOTED = r'([^"\\]*(?:\\.[^"\\]*)*)'  # "unrolled": one way to match, linear
IGNORED = "_"          # a variable we do not use: matched, not kept
MAX_FORMAT = 4096
MAX_FIELDS = 64

_NGINX_VAR = re.compile(r"\$(?:\{([A-Za-z0-9_]{1,64})\}|([A-Za-z0-9_]{1,64}))")
# %[<>]?[!]?[0-9,]*({arg})?letter ; %% is a literal percent
_APACHE_VAR = re.compile(r"%(%|[<>]?!?[0-9,]{0,64}(?:\{([^}]{0,128})\})?([a-zA-Z]))")


class FormatError(ValueError):
    """A format string we cannot compile (says where in it)."""


Fields = dict[str, str]


@dataclass(frozen=True)
class LineFormat:
    """One compiled format: ``parse(text)`` -> canonical fields or None."""

    name: str
    server: str                      # "nginx", "apache" or "" (either)
    parse: Callable[[str], Fields | None]
    error_log: bool = False


def _tokens(spec: str) -> tuple[str, list[tuple[str, str]]]:
    """The format's server and its tokens: ("lit", text) or ("var", canonical name)."""
    if len(spec) > MAX_FORMAT:
        raise FormatError(f"format longer than {MAX_FORMAT} characters")
    nginx = "$" in spec and not _APACHE_VAR.search(spec)
    tokens: list[tuple[str, str]] = []
    pos = 0
    pattern = _NGINX_VAR if nginx else _APACHE_VAR
    for m in pattern.finditer(spec):
        if m.start() > pos:
            tokens.append(("lit", spec[pos:m.start()]))
        pos = m.end()
        if nginx:
            name = m.group(1) or m.group(2)
            tokens.append(("var", NGINX_VARIABLES.get(name, IGNORED)))
            continue
        if m.group(1) == "%":
            tokens.append(("lit", "%"))
            continue
        arg, letter = m.group(2), m.group(3)
        key = f"{{{arg.lower()}}}{letter}" if arg is not None else letter
        tokens.append(("var", APACHE_VARIABLES.get(key, IGNORED)))
    if pos < len(spec):
        tokens.append(("lit", spec[pos:]))
    merged: list[tuple[str, str]] = []
    for kind, text in tokens:  # "%%" next to text: one literal
        if kind == "lit" and merged and merged[-1][0] == "lit":
            merged[-1] = ("lit", merged[-1][1] + text)
        else:
            merged.append((kind, text))
    if not any(kind == "var" for kind, _ in merged):
        raise FormatError("format has no variable ($name or %x)")
    return ("nginx" if nginx else "apache"), merged


def compile_format_string(spec: str, *, name: str = "") -> LineFormat:
    """A format string with nginx or Apache variables, as a linear-time parser of one
    line without its newline (single-character classes: the regex engine's fast path)."""
    server, tokens = _tokens(spec)
    parts: list[str] = []
    groups: list[str] = []
    quick: list[int] = []  # the parts that are quoted fields
    for i, (kind, text) in enumerate(tokens):
        if kind == "lit":
            parts.append(re.escape(text))
            continue
        if len(groups) >= MAX_FIELDS:
            raise FormatError(f"more than {MAX_FIELDS} variables")
        before = tokens[i - 1][1] if i > 0 else ""
        after = tokens[i + 1] if i + 1 < len(tokens) else None
        if after is not None and after[0] == "var":
            raise FormatError(f"variable {len(groups) + 1} is followed by another variable "
                              "with nothing between them: put a literal between the two")
        apache_time = server == "apache" and text == "time"
        # a named group for the first variable of each name; others are not kept
        group = "(" if text == IGNORED or text in groups else f"(?P<{text}>"
        if apache_time:  # %t writes its own brackets
            parts.append(rf"\[{group}[^\]]*)\]")
        elif after is None:
            parts.append(rf"{group}.*)")
        elif before.endswith('"') and after[1].startswith('"'):
            parts.append(group + QUOTED[1:])
            quick.append(len(parts) - 1)
        else:
            parts.append(f"{group}[^{re.escape(after[1][0])}]*)")
        groups.append(text)
    exact = re.compile("".join(parts))
    # a line with no backslash has no escaped quote: a quoted field is then [^"]*, which
    # the regex engine runs about twice as fast as the escape-aware form
    for i in quick:
        parts[i] = parts[i].replace(QUOTED[1:], '[^"]*)')
    fast = re.compile("".join(parts))

    def parse(line: str) -> Fields | None:
        m = (exact if "\\" in line else fast).match(line)
        return None if m is None else m.groupdict()

    return LineFormat(name or "custom", server, parse)


def _parse_json(line: str) -> Fields | None:
    """nginx ``escape=json`` lines: an object whose keys are nginx variable names (with or
    without ``$``); values become text (invalid bytes escaped)."""
    if not line.startswith("{"):
        return None
    try:
        data = json.loads(line)
    except (ValueError, RecursionError):  # a line of 64 Ki "{" nests too deep
        if "\\x" not in line:
            return None
        # nginx writes bytes >= 0x80 raw: our \xHH escapes of invalid UTF-8 are no JSON
        # escapes; parse the original bytes, escape each value instead
        try:
            data = json.loads(unescape(line).decode("utf-8", "surrogateescape"))
        except (ValueError, RecursionError):
            return None
    if not isinstance(data, dict):
        return None
    fields: Fields = {}
    for key, value in list(data.items())[:MAX_FIELDS]:
        name = NGINX_VARIABLES.get(str(key).lstrip("$"))
        if name is None or isinstance(value, (dict, list)) or value is None:
            continue
        fields[name] = os_text(value) if isinstance(value, str) else str(value)
    return fields


_NGINX_ERROR = re.compile(
    r"(\d{4}/\d\d/\d\d \d\d:\d\d:\d\d) \[([a-z]{1,16})\] (\d{1,10})#\d{1,10}: "
    r"(?:\*\d{1,20} )?([^\n]*)")
_APACHE_ERROR = re.compile(
    r"\[([^\]\n]{1,64})\] \[([^\]\n]{0,64})\] (?:\[pid ([0-9]{1,10})[^\]\n]{0,64}\] )?"
    r"(?:\[client ([^\]\n]{0,128})\] )?([^\n]*)")
_NGINX_ERROR_FIELDS = {", client: ": "client", ", server: ": "vhost", ", host: ": "vhost"}


_QUOTED = re.compile(QUOTED)


def _quoted_at(text: str, start: int) -> str:
    """The double-quoted string that starts at ``start`` (backslash escapes kept)."""
    m = _QUOTED.match(text, start)
    return m.group(1) if m else ""


def _parse_nginx_error(line: str) -> Fields | None:
    m = _NGINX_ERROR.match(line)
    if m is None:
        return None
    message = m.group(4)
    fields = {"time_iso": m.group(1), "level": m.group(2), "pid": m.group(3),
              "message": message}
    for marker, name in _NGINX_ERROR_FIELDS.items():
        at = message.find(marker)
        if at < 0:
            continue
        start = at + len(marker)
        if message.startswith('"', start):
            value = _quoted_at(message, start + 1)
        else:
            end = message.find(",", start)
            value = message[start:end if end >= 0 else len(message)]
        fields.setdefault(name, value)  # server: before host:
    at = message.find(', request: "')
    if at >= 0:
        fields["request"] = _quoted_at(message, at + len(', request: "'))
    return fields


def _parse_apache_error(line: str) -> Fields | None:
    m = _APACHE_ERROR.match(line)
    if m is None:
        return None
    module_level = m.group(2)
    level = module_level.rpartition(":")[2]
    fields = {"time": m.group(1), "level": level, "message": m.group(5)}
    if m.group(3):
        fields["pid"] = m.group(3)
    client = m.group(4)
    if client:
        host, sep, port = client.rpartition(":")
        fields["client"] = host if sep and port.isdigit() else client
    return fields


def compile_format(spec: str) -> LineFormat:
    """A named format or a format string."""
    if spec == "json":
        return LineFormat("json", "nginx", _parse_json)
    if spec == "nginx_error":
        return LineFormat("nginx_error", "nginx", _parse_nginx_error, error_log=True)
    if spec == "apache_error":
        return LineFormat("apache_error", "apache", _parse_apache_error, error_log=True)
    named = NAMED_FORMATS.get(spec)
    if named is not None:
        compiled = compile_format_string(named, name=spec)
        return LineFormat(spec, "", compiled.parse)
    return compile_format_string(spec)
