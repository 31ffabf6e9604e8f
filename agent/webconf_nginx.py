"""The nginx configuration: web roots (``root``, ``alias``) and logs, per ``server``.

A small tokenizer (words, quoted strings with escapes, ``;`` ``{`` ``}``, ``#`` comments)
and a walk over the statements that follows ``include`` (globs, relative to the main
file's directory as nginx's ``-c`` prefix is) through the bounded ``ConfigReader``.
Only what locates files is understood; everything else is skipped.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field

from agent.webconf import ConfigReader, Found, Limits, WebLog, WebRoot, clean_root, text

SERVER = "nginx"
PREFIX = "/usr/share/nginx"   # Debian's compiled-in prefix: `root html;` is below it
MAX_NESTING = 32              # blocks inside blocks (nginx configs use 3 or 4)


@dataclass
class _Token:
    value: str
    line: int
    quoted: bool = False


@dataclass
class _Server:
    names: list[str] = field(default_factory=list)
    roots: list[WebRoot] = field(default_factory=list)
    logs: list[WebLog] = field(default_factory=list)


class TokenError(ValueError):
    pass


def tokens(source: str, max_token: int) -> Iterator[_Token]:
    """nginx's lexical syntax; an unterminated quote or an over-long token is an error."""
    i, n, line = 0, len(source), 1
    while i < n:
        c = source[i]
        if c == "\n":
            line += 1
            i += 1
        elif c.isspace():
            i += 1
        elif c == "#":
            end = source.find("\n", i)
            i = n if end < 0 else end
        elif c in ";{}":
            yield _Token(c, line)
            i += 1
        elif c in "\"'":
            start_line, out, i = line, [], i + 1
            while i < n and source[i] != c:
                if source[i] == "\\" and i + 1 < n:
                    i += 1
                if source[i] == "\n":
                    line += 1
                out.append(source[i])
                i += 1
                if len(out) > max_token:
                    raise TokenError(f"line {start_line}: a string over {max_token} bytes")
            if i >= n:
                raise TokenError(f"line {start_line}: unterminated string")
            i += 1
            yield _Token("".join(out), start_line, quoted=True)
        else:
            start = i
            while i < n and not source[i].isspace() and source[i] not in ";{}\"'":
                i += 1
                if i - start > max_token:
                    raise TokenError(f"line {line}: a word over {max_token} bytes")
            yield _Token(source[start:i], line)


class NginxParser:
    def __init__(self, main: str, *, prefix: str = PREFIX, limits: Limits | None = None
                 ) -> None:
        self.main = os.path.abspath(main)
        self.conf_dir = os.path.dirname(self.main)
        self.prefix = prefix
        self.found = Found(SERVER, limits or Limits())
        self.reader = ConfigReader(self.found)
        self.formats: dict[str, tuple[str, str]] = {}   # log_format name -> (hint, string)
        self.servers: list[_Server] = []

    def parse(self) -> Found:
        self._file(self.main, self.main)
        return self.found

    def _file(self, path: str, where: str) -> None:
        got = self.reader.read(path, where)
        if got is None:
            return
        data, key = got
        self.reader.chain.append(key)
        try:
            toks = list(tokens(text(data), self.found.limits.max_line_bytes))
            self._statements(path, iter(toks), 0)
        except TokenError as e:
            self.found.error(path, str(e))
        finally:
            self.reader.chain.pop()

    def _statements(self, path: str, toks: Iterator[_Token], depth: int) -> None:
        """Statements up to the ``}`` that closes the current block (or the end)."""
        if depth > MAX_NESTING:
            raise TokenError(f"blocks nested deeper than {MAX_NESTING}")
        words: list[_Token] = []
        for tok in toks:
            if not tok.quoted and tok.value == ";":
                if words:
                    self._directive(path, words)
                words = []
            elif not tok.quoted and tok.value == "{":
                name = words[0].value if words else ""
                if name == "server" and self._in_http_or_top():
                    self.servers.append(_Server())
                    try:
                        self._statements(path, toks, depth + 1)
                    finally:
                        self._end_server(self.servers.pop())
                else:
                    self._statements(path, toks, depth + 1)
                words = []
            elif not tok.quoted and tok.value == "}":
                return
            else:
                words.append(tok)

    def _in_http_or_top(self) -> bool:
        return not self.servers   # a server block is never inside another

    def _directive(self, path: str, words: list[_Token]) -> None:
        name, args = words[0].value, [w.value for w in words[1:]]
        where = f"{path}:{words[0].line}"
        server = self.servers[-1] if self.servers else None
        if name == "include" and args:
            pattern = args[0] if os.path.isabs(args[0]) else os.path.join(self.conf_dir,
                                                                          args[0])
            for included in self.reader.expand(pattern, where):
                self._file(included, where)
        elif name in ("root", "alias") and args:
            raw = args[0] if os.path.isabs(args[0]) else os.path.join(self.prefix, args[0])
            root = clean_root(raw)
            if root is None:
                self.found.error(where, f"{name} {args[0]!r}: not usable as a web root")
            elif server is not None:
                server.roots.append(WebRoot(root, SERVER, None, name, where))
            else:
                self.found.root(WebRoot(root, SERVER, None, name, where))
        elif name == "server_name" and server is not None:
            server.names.extend(a for a in args if a and a != "_")
        elif name == "log_format" and len(args) >= 2:
            escape = [a for a in args[1:] if a.startswith("escape=")]
            strings = [a for a in args[1:] if not a.startswith("escape=")]
            hint = "nginx:json" if escape == ["escape=json"] else f"nginx:{args[0]}"
            self.formats[args[0]] = (hint, "".join(strings))
        elif name in ("access_log", "error_log") and args:
            self._log(name, args, where, server)

    def _log(self, name: str, args: list[str], where: str, server: _Server | None) -> None:
        target = args[0]
        if target in ("off", "stderr", "/dev/null") or target.startswith(("syslog:",
                                                                          "memory:")):
            return
        if "$" in target:
            self.found.error(where, f"{name} {target!r}: a path with variables, not followed")
            return
        path = os.path.normpath(target if os.path.isabs(target)
                                else os.path.join(self.prefix, target))
        if name == "error_log":
            entry = WebLog(path, "error", "nginx:error", SERVER, None, where)
        else:
            fmt = args[1] if len(args) > 1 and "=" not in args[1] else "combined"
            hint, string = self.formats.get(fmt, ("combined" if fmt == "combined"
                                                  else f"nginx:{fmt}", ""))
            entry = WebLog(path, "access", hint, SERVER, None, where, string or None)
        if server is not None:
            server.logs.append(entry)
        else:
            self.found.log(entry)

    def _end_server(self, server: _Server) -> None:
        vhost = server.names[0] if server.names else None
        for root in server.roots:
            self.found.root(WebRoot(root.path, SERVER, vhost, root.directive, root.source))
        for entry in server.logs:
            self.found.log(WebLog(entry.path, entry.kind, entry.format, SERVER, vhost,
                                  entry.source, entry.format_string))


def parse_nginx(main: str, *, prefix: str = PREFIX, limits: Limits | None = None) -> Found:
    """Web roots and logs named by the nginx configuration ``main`` and its includes."""
    return NginxParser(main, prefix=prefix, limits=limits).parse()
