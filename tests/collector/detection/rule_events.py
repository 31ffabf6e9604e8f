"""Seeded events built from rules' own literals: hits, case changes and near misses.

For the differential test (the fast engine against the reference matcher) and for the
rules benchmark against its peers (bench/rules_peers). ``rule_event`` walks a rule's
condition (expr.py) and writes, for the fields it tests, texts that contain its
literals where they must be (an ``endswith`` literal at the end, a ``startswith`` one at
the start, ``contains`` ones in between), then mutates them the way an attacker or an
unlucky command line would: other letter case, one character dropped or changed, a
literal left out, a field left absent. Nothing is checked here: which events match
which rules is what the engines are asked.
"""

from __future__ import annotations

import random
import string
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from collector.detection.expr import AllOf, AnyOf, Expr, NotOf, TextTest
from collector.detection.modifiers import Kind, Pattern
from collector.detection.rules import DetectionRule

BENIGN_COMMANDS = (
    "/usr/bin/ls -la /var/www/site{n}", "/usr/sbin/nginx -g daemon off;",
    "python3 manage.py runworker --id {n}", "/bin/bash -c cd /srv/app{n} && git pull",
    "crontab -l", "systemctl status nginx", "/usr/bin/grep -r session{n} /var/log/app",
    "curl -s https://api.example.gov.vn/health?probe={n}", "/usr/bin/id -u",
    "tar czf /backup/db-{n}.tgz /var/lib/db", "/usr/bin/php-fpm8.2 --nodaemonize",
    "/usr/bin/find /tmp -mtime +{n} -delete", "/usr/bin/awk -F: {{print $1}} /etc/group",
    "/usr/bin/ssh -o BatchMode=yes deploy@10.0.{n}.1 uptime", "/usr/bin/sudo -n true",
    "/usr/bin/wget -q -O /tmp/pkg{n}.deb https://repo.example.org/pkg{n}.deb",
    "/usr/bin/openssl x509 -in /etc/ssl/certs/site{n}.pem -noout -enddate",
    "/usr/bin/base64 /var/tmp/report{n}.bin", "/usr/sbin/iptables -L -n",
    "/usr/bin/chmod 0644 /var/www/html/index{n}.html", "/usr/bin/kill -HUP {n}",
)
PARENTS = ("/usr/lib/systemd/systemd", "/usr/sbin/cron", "/usr/sbin/sshd", "/bin/bash",
           "/usr/sbin/nginx", "/usr/sbin/apache2", "/usr/bin/python3")
USERS = (("root", "0"), ("www-data", "33"), ("deploy", "1000"), ("backup", "34"))
_FILLER = string.ascii_lowercase + string.digits + "/-_. "


def _noise(rnd: random.Random, most: int) -> str:
    return "".join(rnd.choice(_FILLER) for _ in range(rnd.randrange(most + 1)))


def _recase(rnd: random.Random, text: str) -> str:
    choice = rnd.randrange(3)
    if choice == 0:
        return text.upper()
    if choice == 1:
        return text.title()
    return "".join(c.upper() if rnd.random() < 0.3 else c for c in text)


def _near_miss(rnd: random.Random, text: str) -> str:
    if len(text) < 2:
        return text + "x"
    i = rnd.randrange(len(text))
    if rnd.random() < 0.5:
        return text[:i] + text[i + 1:]
    return text[:i] + rnd.choice(string.ascii_letters) + text[i + 1:]


class _Fields:
    """Per path: the literal that must start it, end it, fill it, or be inside it."""

    def __init__(self) -> None:
        self.equals: dict[str, str] = {}
        self.starts: dict[str, str] = {}
        self.ends: dict[str, str] = {}
        self.inside: dict[str, list[str]] = {}

    def add(self, path: str, pattern: Pattern, rnd: random.Random) -> None:
        text = pattern.text
        if pattern.kind is Kind.EQUALS:
            self.equals[path] = text
        elif pattern.kind is Kind.PREFIX:
            self.starts[path] = text
        elif pattern.kind is Kind.SUFFIX:
            self.ends[path] = text
        elif pattern.kind is Kind.CONTAINS:
            self.inside.setdefault(path, []).append(text)
        elif pattern.kind is Kind.WILDCARD and pattern.needle:
            self.inside.setdefault(path, []).append(pattern.needle)
        else:  # a regex: its literal runs, with luck
            runs = [r for r in _literal_runs(text) if len(r) >= 2]
            if runs:
                self.inside.setdefault(path, []).append(rnd.choice(runs))

    def paths(self) -> set[str]:
        return {*self.equals, *self.starts, *self.ends, *self.inside}

    def text(self, path: str, rnd: random.Random) -> str:
        if path in self.equals and rnd.random() < 0.8:
            return self.equals[path]
        middle = [_noise(rnd, 6)]
        for part in self.inside.get(path, ()):
            middle += [part, _noise(rnd, 4) or " "]
        return self.starts.get(path, "") + "".join(middle) + self.ends.get(path, "")


def _literal_runs(source: str) -> Iterator[str]:
    run: list[str] = []
    escaped = False
    for char in source:
        if escaped:
            if not char.isalnum():
                run.append(char)
            escaped = False
        elif char == "\\":
            escaped = True
        elif char.isalnum() or char in "/-_ =:":
            run.append(char)
        else:
            if run:
                yield "".join(run)
            run = []
    if run:
        yield "".join(run)


def _satisfy(expr: Expr, fields: _Fields, rnd: random.Random, depth: int = 0) -> None:
    if depth > 32:
        return
    if isinstance(expr, TextTest):
        fields.add(rnd.choice(expr.paths), rnd.choice(expr.patterns), rnd)
    elif isinstance(expr, AllOf):
        for arg in expr.args:
            _satisfy(arg, fields, rnd, depth + 1)
    elif isinstance(expr, AnyOf):
        for arg in rnd.sample(expr.args, min(len(expr.args), rnd.choice((1, 1, 2)))):
            _satisfy(arg, fields, rnd, depth + 1)
    elif isinstance(expr, NotOf) and rnd.random() < 0.3:  # sometimes walk into a filter
        _satisfy(expr.arg, fields, rnd, depth + 1)
    # RawCheck, TextsCheck: the base event's values decide


def rule_fields(rule: DetectionRule, rnd: random.Random) -> dict[str, str]:
    """ECS path -> text for the fields a rule tests, mutated now and then."""
    fields = _Fields()
    if rule.condition is not None:
        _satisfy(rule.condition, fields, rnd)
    out: dict[str, str] = {}
    paths = sorted(fields.paths())
    dropped = rnd.choice(paths) if paths and rnd.random() < 0.15 else None
    for path in paths:
        if path == dropped:
            continue
        text = fields.text(path, rnd)
        roll = rnd.random()
        if roll < 0.3:
            text = _recase(rnd, text)
        elif roll < 0.45:
            text = _near_miss(rnd, text)
        out[path] = text
    return out


def _set(doc: dict[str, Any], path: str, value: Any) -> None:
    node = doc
    parts = path.split(".")
    for part in parts[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = node[part] = {}
        node = child
    node[parts[-1]] = value


def process_event(rnd: random.Random, n: int) -> dict[str, Any]:
    """A benign ECS process start event (docs/events.md), all its values varied."""
    command = rnd.choice(BENIGN_COMMANDS).format(n=rnd.randrange(10_000))
    first = command.split()[0]
    exe = first if first.startswith("/") else "/usr/bin/" + first
    parent = rnd.choice(PARENTS)
    user, uid = rnd.choice(USERS)
    return {
        "@timestamp": f"2026-01-01T{(n // 3600) % 24:02d}:{(n // 60) % 60:02d}:{n % 60:02d}Z",
        "event": {"id": f"p-{n}", "dataset": "sisguard.process", "action": "exec",
                  "type": ["start"], "category": ["process"], "kind": "event"},
        "host": {"name": f"web{n % 20}", "hostname": f"web{n % 20}"},
        "agent": {"id": f"a{n % 20}"},
        "process": {"executable": exe, "command_line": command, "pid": 1000 + n,
                    "name": exe.rsplit("/", 1)[-1], "working_directory": "/srv/app",
                    "parent": {"executable": parent, "command_line": parent, "pid": 1 + n % 900,
                               "name": parent.rsplit("/", 1)[-1]}},
        "user": {"name": user, "id": uid},
    }


def events_for(rules: Sequence[DetectionRule], count: int, *, seed: int = 14,
               from_rules: float = 0.5,
               base: Any = None) -> list[dict[str, Any]]:
    """``count`` events: ``from_rules`` of them written from a random rule's literals
    over a benign base event (``base(rnd, n)``, default ``process_event``)."""
    rnd = random.Random(seed)
    make = base or process_event
    out = []
    for n in range(count):
        doc = make(rnd, n)
        if rules and rnd.random() < from_rules:
            for path, text in rule_fields(rnd.choice(rules), rnd).items():
                _set(doc, path, text)
        out.append(doc)
    return out


def flatten(doc: Mapping[str, Any], names: Mapping[str, str]) -> dict[str, Any]:
    """The event in Sigma's flat field names (``names``: ECS path -> Sigma name), for
    engines without our field mapping."""
    out: dict[str, Any] = {}
    for path, name in names.items():
        node: Any = doc
        for part in path.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        if node is not None and name not in out:
            out[name] = node if isinstance(node, str) else str(node)
    return out

