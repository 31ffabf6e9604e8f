"""The Apache configuration: web roots (``DocumentRoot``, ``Alias``, ``ScriptAlias``) and
logs (``CustomLog``, ``ErrorLog``), per ``<VirtualHost>``.

Line based as httpd reads it: ``\\`` continues a line, ``#`` starts a comment line,
``<Section ...>`` / ``</Section>`` nest, arguments may be double-quoted. ``${VAR}`` comes
from ``Define`` and from Debian's ``envvars`` beside the main file (``export NAME=value``
lines only: it is a shell script and is never run). ``Include`` / ``IncludeOptional``
globs are relative to ``ServerRoot`` (default: the main file's directory, as ``-d``).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field

from agent.webconf import ConfigReader, Found, Limits, WebLog, WebRoot, clean_root, shown, text

SERVER = "apache"
MAX_SECTIONS = 32   # sections open at once
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_SHELL_VAR = re.compile(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?")
_EXPORT = re.compile(r"^\s*export\s+([A-Za-z_][A-Za-z0-9_]*)=(.*)$")
_ARG = re.compile(r'"((?:[^"\\]|\\.)*)"|(\S+)')
# the formats httpd and Debian name; others are passed on with their string
KNOWN_FORMATS = {"combined": "combined", "common": "common",
                 "vhost_combined": "vhost_combined"}


@dataclass
class _VHost:
    names: list[str] = field(default_factory=list)
    roots: list[WebRoot] = field(default_factory=list)
    logs: list[WebLog] = field(default_factory=list)


def read_envvars(path: str, reader: ConfigReader) -> dict[str, str]:
    """``export NAME=value`` lines of Debian's ``envvars`` (``$SUFFIX`` and earlier
    names expanded; anything else unknown is empty, as in a shell)."""
    if not os.path.exists(path):
        return {}
    got = reader.read(path, path)
    if got is None:
        return {}
    env: dict[str, str] = {"SUFFIX": ""}
    for line in text(got[0]).splitlines()[:10_000]:
        m = _EXPORT.match(line)
        if not m:
            continue
        value = m.group(2).strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        if value.startswith("$(") or "`" in value:
            continue   # a command substitution: not ours to run
        env[m.group(1)] = _SHELL_VAR.sub(lambda v: env.get(v.group(1), ""), value)
    env.pop("SUFFIX", None)
    return env


def arguments(rest: str) -> list[str]:
    return [m.group(1).replace('\\"', '"') if m.group(1) is not None else m.group(2)
            for m in _ARG.finditer(rest)]


class ApacheParser:
    def __init__(self, main: str, *, server_root: str | None = None,
                 limits: Limits | None = None, env: dict[str, str] | None = None) -> None:
        self.main = os.path.abspath(main)
        self.server_root = server_root or os.path.dirname(self.main)
        self.found = Found(SERVER, limits or Limits())
        self.reader = ConfigReader(self.found)
        self.vars: dict[str, str] = dict(env) if env is not None else read_envvars(
            os.path.join(os.path.dirname(self.main), "envvars"), self.reader)
        self.formats: dict[str, str] = {}
        self.vhosts: list[_VHost] = []

    def parse(self) -> Found:
        self._file(self.main, self.main)
        return self.found

    def _file(self, path: str, where: str) -> None:
        got = self.reader.read(path, where)
        if got is None:
            return
        data, key = got
        self.reader.chain.append(key)
        sections: list[str] = []
        try:
            self._lines(path, text(data), sections)
        finally:
            self.reader.chain.pop()
            while sections:   # a section left open at the end of the file
                if sections.pop() == "virtualhost":
                    self._end_vhost(self.vhosts.pop())

    def _lines(self, path: str, source: str, sections: list[str]) -> None:
        limit = self.found.limits.max_line_bytes
        pending, start = "", 0
        for number, line in enumerate(source.split("\n"), 1):
            if len(pending) + len(line) > limit:
                self.found.error(f"{path}:{number}", f"a line over {limit} bytes: skipped")
                pending = ""
                continue
            if line.endswith("\\"):
                pending, start = pending + line[:-1], start or number
                continue
            whole, first = pending + line, start or number
            pending, start = "", 0
            self._line(path, first, whole.strip(), sections)

    def _line(self, path: str, number: int, line: str, sections: list[str]) -> None:
        if not line or line.startswith("#"):
            return
        where = f"{path}:{number}"
        if line.startswith("</"):
            name = line[2:].rstrip(">").strip().lower()
            if sections and sections[-1] == name:
                sections.pop()
                if name == "virtualhost":
                    self._end_vhost(self.vhosts.pop())
            return
        if line.startswith("<"):
            if len(sections) >= MAX_SECTIONS:
                self.found.error(where, f"sections nested deeper than {MAX_SECTIONS}")
                return
            name = line[1:].rstrip(">").split(None, 1)[0].lower() if len(line) > 2 else ""
            sections.append(name)
            if name == "virtualhost":
                self.vhosts.append(_VHost())
            return
        name, _, rest = line.partition(" ")
        if "\t" in name:
            name, _, more = name.partition("\t")
            rest = more + " " + rest
        self._directive(name.lower(), self._expand(rest, where), where)

    def _expand(self, rest: str, where: str) -> list[str]:
        def var(m: re.Match[str]) -> str:
            value = self.vars.get(m.group(1))
            if value is None:
                self.found.error(where, f"${{{m.group(1)}}} is not defined")
                return m.group(0)
            return value
        return arguments(_VAR.sub(var, rest))

    def _path(self, value: str) -> str:
        return os.path.normpath(value if os.path.isabs(value)
                                else os.path.join(self.server_root, value))

    def _directive(self, name: str, args: list[str], where: str) -> None:
        vhost = self.vhosts[-1] if self.vhosts else None
        if name == "define" and args:
            self.vars[args[0]] = args[1] if len(args) > 1 else ""
        elif name == "serverroot" and args:
            self.server_root = os.path.normpath(args[0])
        elif name in ("include", "includeoptional") and args:
            pattern = self._path(args[0])
            for included in self.reader.expand(pattern, where):
                if name == "includeoptional" and not os.path.exists(included):
                    continue
                self._file(included, where)
        elif name in ("documentroot", "alias", "scriptalias") and args:
            raw = args[0] if name == "documentroot" else (args[1] if len(args) > 1 else "")
            directive = {"documentroot": "DocumentRoot", "alias": "Alias",
                         "scriptalias": "ScriptAlias"}[name]
            root = clean_root(self._path(raw)) if raw and "${" not in raw else None
            if root is None:
                self.found.error(where, f"{directive} {shown(raw)!r}: not usable as a "
                                        "web root")
            elif vhost is not None:
                vhost.roots.append(WebRoot(root, SERVER, None, directive, where))
            else:
                self.found.root(WebRoot(root, SERVER, None, directive, where))
        elif name == "servername" and args and vhost is not None:
            vhost.names.append(args[0].split("://")[-1].split(":")[0])
        elif name == "serveralias" and vhost is not None:
            vhost.names.extend(args)
        elif name == "logformat" and len(args) >= 2:
            self.formats[args[1]] = args[0]
        elif name in ("customlog", "errorlog", "transferlog") and args:
            self._log(name, args, where, vhost)

    def _log(self, name: str, args: list[str], where: str, vhost: _VHost | None) -> None:
        target = args[0]
        if target.startswith("|") or target.startswith("syslog") or "${" in target:
            if "${" in target:
                self.found.error(where, f"{name} {shown(target)!r}: undefined variable")
            return   # a pipe or syslog: no file to follow
        path = self._path(target)
        if name == "errorlog":
            entry = WebLog(path, "error", "apache:error", SERVER, None, where)
        else:
            fmt = args[1] if name == "customlog" and len(args) > 1 else "common"
            if fmt in self.formats:   # a nickname
                string: str | None = self.formats[fmt]
                hint = KNOWN_FORMATS.get(fmt, f"apache:{fmt}")
            elif "%" in fmt:          # the format string itself
                string, hint = fmt, "apache:custom"
            else:
                string, hint = None, KNOWN_FORMATS.get(fmt, f"apache:{fmt}")
            entry = WebLog(path, "access", hint, SERVER, None, where, string)
        if vhost is not None:
            vhost.logs.append(entry)
        else:
            self.found.log(entry)

    def _end_vhost(self, vhost: _VHost) -> None:
        name = vhost.names[0] if vhost.names else None
        for root in vhost.roots:
            self.found.root(WebRoot(root.path, SERVER, name, root.directive, root.source))
        for entry in vhost.logs:
            self.found.log(WebLog(entry.path, entry.kind, entry.format, SERVER, name,
                                  entry.source, entry.format_string))


def parse_apache(main: str, *, server_root: str | None = None,
                 limits: Limits | None = None) -> Found:
    """Web roots and logs named by the Apache configuration ``main`` and its includes."""
    return ApacheParser(main, server_root=server_root, limits=limits).parse()
