"""Parsing auth log lines (sshd, sudo, su, shadow-utils) into ECS documents.

Pure functions, no I/O: ``parse_syslog_line`` splits a syslog file line into its header
(timestamp, host, program, pid) and message; ``parse_auth_message`` turns the message of
one of the programs we care about into ECS fields; ``auth_document`` puts both together.
Lines of those programs that match no known form still become a document with
``event.action: log_line`` so nothing is lost.

Timestamps: classic syslog (``Nov 29 16:35:12``, local time, no year: the year is the one
that puts the moment closest to ``now`` without being more than a day in the future) and
RFC 3339 (``2026-11-29T16:35:12.123456+00:00``, Debian 12's rsyslog default).
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from typing import Any

from agent.ecs import Document, new_event, timestamp

DATASET = "sisguard.auth"

# Programs whose lines we keep; the key is the name as logged, the value as reported.
PROGRAMS: dict[str, str] = {
    "sshd": "sshd", "sshd-session": "sshd", "sudo": "sudo", "su": "su",
    "useradd": "useradd", "userdel": "userdel", "usermod": "usermod",
    "groupadd": "groupadd", "groupdel": "groupdel", "groupmod": "groupmod",
    "gpasswd": "gpasswd", "passwd": "passwd", "chpasswd": "chpasswd",
}

_MONTHS = {m: i for i, m in enumerate(
    ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"), 1)}

_CLASSIC = re.compile(
    r"^(?P<mon>[A-Z][a-z]{2}) {1,2}(?P<day>\d{1,2}) (?P<h>\d\d):(?P<m>\d\d):(?P<s>\d\d) ")
_RFC3339 = re.compile(
    r"^(?P<ts>\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d(?:\.\d{1,9})?(?:Z|[+-]\d\d:?\d\d)) ")
_HEADER = re.compile(r"^(?P<host>\S+) (?P<prog>[^\s:\[]+)(?:\[(?P<pid>\d+)\])?: ?(?P<msg>.*)$",
                     re.DOTALL)


@dataclass(frozen=True)
class SyslogRecord:
    timestamp: dt.datetime   # aware
    host: str
    program: str
    pid: int | None
    message: str


def parse_timestamp_prefix(line: str, now: dt.datetime) -> tuple[dt.datetime, str] | None:
    """The timestamp at the start of ``line`` and the rest, or None."""
    m = _RFC3339.match(line)
    if m:
        text = m.group("ts").replace(" ", "T", 1)
        if text.endswith("Z"):
            text = text[:-1] + "+00:00"
        head, _, frac = text[:19], "", text[19:]
        tz = ""
        if frac.startswith("."):
            digits = re.match(r"\.(\d+)", frac)
            assert digits is not None
            tz = frac[len(digits.group(0)):]
            micros = (digits.group(1) + "000000")[:6]
        else:
            tz, micros = frac, "000000"
        if len(tz) == 5:  # +0000
            tz = tz[:3] + ":" + tz[3:]
        try:
            when = dt.datetime.fromisoformat(f"{head}.{micros}{tz}")
        except ValueError:
            return None
        return when, line[m.end():]
    m = _CLASSIC.match(line)
    if m:
        local = now.astimezone()
        try:
            month, day = _MONTHS[m.group("mon")], int(m.group("day"))
            h, mi, s = int(m.group("h")), int(m.group("m")), int(m.group("s"))
        except KeyError:
            return None
        for year in (local.year + 1, local.year, local.year - 1):
            try:
                when = local.replace(year=year, month=month, day=day, hour=h, minute=mi,
                                     second=s, microsecond=0)
            except ValueError:  # Feb 29 in a non-leap year, hour 25, ...
                continue
            if when <= local + dt.timedelta(days=1):
                return when, line[m.end():]
        return None
    return None


def parse_syslog_line(line: str, now: dt.datetime) -> SyslogRecord | None:
    """Split ``Nov 29 16:35:12 host prog[123]: message`` (or RFC 3339) into its parts."""
    line = line.rstrip("\r\n")
    stamped = parse_timestamp_prefix(line, now)
    if stamped is None:
        return None
    when, rest = stamped
    m = _HEADER.match(rest)
    if m is None:
        return None
    pid = m.group("pid")
    return SyslogRecord(when, m.group("host"), m.group("prog"), int(pid) if pid else None,
                        m.group("msg"))


# --- messages -------------------------------------------------------------------------

_IP = r"(?P<ip>[0-9A-Fa-f:.]+)"
_SSH_AUTH = re.compile(
    r"^(?P<verdict>Accepted|Failed) (?P<method>\S+) for (?P<invalid>invalid user )?"
    r"(?P<user>.*?) from " + _IP + r" port (?P<port>\d+)")
_SSH_INVALID = re.compile(r"^Invalid user (?P<user>.*?) from " + _IP + r"(?: port (?P<port>\d+))?")
_REPEATED = re.compile(r"^message repeated (?P<n>\d+) times: \[ ?(?P<inner>.*?) ?\]$")
_PAM_FAIL = re.compile(r"^pam_unix\((?P<svc>[\w-]+):auth\): authentication failure;(?P<kv>.*)$")
_SUDO = re.compile(r"^\s*(?P<user>\S+) : (?P<rest>.*)$")
_SU_OK = re.compile(r"^(?:\+ \S+ )?\(to (?P<target>[^)]+)\) (?P<user>\S+) on (?P<tty>\S+)")
_SU_FAIL = re.compile(
    r"^(?:FAILED SU|- \S+) \(to (?P<target>[^)]+)\) (?P<user>\S+) on (?P<tty>\S+)")
_PW_CHANGED = re.compile(r"^pam_unix\([\w-]+:chauthtok\): password changed for (?P<user>\S+)")

# (pattern, action, event.type, which group names the user / the group)
_IAM: list[tuple[re.Pattern[str], str, list[str]]] = [
    (re.compile(r"^new user: name=(?P<user>[^,]+), UID=(?P<uid>\d+), GID=(?P<gid>\d+)"),
     "user_created", ["user", "creation"]),
    (re.compile(r"^new group: name=(?P<group>[^,]+), GID=(?P<gid>\d+)"),
     "group_created", ["group", "creation"]),
    (re.compile(r"^delete user '(?P<user>[^']+)'"), "user_deleted", ["user", "deletion"]),
    (re.compile(r"^group '(?P<group>[^']+)' removed$"), "group_deleted", ["group", "deletion"]),
    (re.compile(r"^removed group '(?P<group>[^']+)' owned by '(?P<user>[^']+)'"),
     "group_deleted", ["group", "deletion"]),
    (re.compile(r"^add '(?P<user>[^']+)' to group '(?P<group>[^']+)'"),
     "user_added_to_group", ["group", "change"]),
    (re.compile(r"^user (?P<user>\S+) added by \S+ to group (?P<group>\S+)"),
     "user_added_to_group", ["group", "change"]),
    (re.compile(r"^delete '(?P<user>[^']+)' from group '(?P<group>[^']+)'"),
     "user_removed_from_group", ["group", "change"]),
    (re.compile(r"^user (?P<user>\S+) removed by \S+ from group (?P<group>\S+)"),
     "user_removed_from_group", ["group", "change"]),
    (re.compile(r"^change user '(?P<user>[^']+)'"), "user_modified", ["user", "change"]),
    (re.compile(r"^(?:lock|unlock) user '(?P<user>[^']+)'"), "user_modified", ["user", "change"]),
    (_PW_CHANGED, "password_changed", ["user", "change"]),
]


def _pam_kv(text: str) -> dict[str, str]:
    return {k: v for k, v in re.findall(r"(\w+)=(\S*)", text)}


def _sudo_kv(rest: str) -> tuple[str | None, dict[str, str]]:
    """``3 incorrect password attempts ; TTY=pts/0 ; PWD=/x ; USER=root ; COMMAND=/bin/id``."""
    head: str | None = None
    kv: dict[str, str] = {}
    parts = rest.split(" ; ")
    for i, part in enumerate(parts):
        key, eq, value = part.partition("=")
        if eq and key.isupper() and key.isalpha():
            if key == "COMMAND":  # the command may itself contain " ; "
                kv[key] = " ; ".join([value, *parts[i + 1:]])
                break
            kv[key] = value
        elif i == 0:
            head = part.strip()
    return head, kv


def parse_auth_message(program: str, message: str) -> dict[str, Any] | None:
    """ECS fields for ``message`` logged by ``program`` (as named in ``PROGRAMS``).

    Returns a dict with ``action``, ``category``, ``type``, optional ``outcome`` and the
    fields to merge (``fields``), or None if the message has no known form.
    """
    repeated = _REPEATED.match(message)
    if repeated:
        inner = parse_auth_message(program, repeated.group("inner"))
        if inner is not None:
            inner["fields"].setdefault("sisguard", {}).setdefault("auth", {})["repeated"] = (
                int(repeated.group("n")))
        return inner
    if program == "sshd":
        return _sshd(message)
    if program == "sudo":
        return _sudo(message)
    if program == "su":
        return _su(message)
    for pattern, action, types in _IAM:
        m = pattern.match(message)
        if m:
            groups = m.groupdict()
            fields: dict[str, Any] = {}
            if groups.get("user"):
                fields["user"] = {"name": groups["user"]}
                if groups.get("uid"):
                    fields["user"]["id"] = groups["uid"]
            if groups.get("group"):
                fields["group"] = {"name": groups["group"]}
            elif groups.get("gid"):
                fields["group"] = {"id": groups["gid"]}
            if groups.get("gid") and "group" in fields:
                fields["group"]["id"] = groups["gid"]
            return {"action": action, "category": ["iam"], "type": types,
                    "outcome": "success", "fields": fields}
    return None


def _sshd(message: str) -> dict[str, Any] | None:
    m = _SSH_AUTH.match(message)
    if m:
        auth: dict[str, Any] = {"method": m.group("method")}
        if m.group("invalid"):
            auth["invalid_user"] = True
        return {"action": "ssh_login", "category": ["authentication"], "type": ["start"],
                "outcome": "success" if m.group("verdict") == "Accepted" else "failure",
                "fields": {"user": {"name": m.group("user")},
                           "source": {"ip": m.group("ip"), "port": int(m.group("port"))},
                           "sisguard": {"auth": auth}}}
    m = _SSH_INVALID.match(message)
    if m:
        source: dict[str, Any] = {"ip": m.group("ip")}
        if m.group("port"):
            source["port"] = int(m.group("port"))
        return {"action": "ssh_invalid_user", "category": ["authentication"],
                "type": ["start"], "outcome": "failure",
                "fields": {"user": {"name": m.group("user")}, "source": source,
                           "sisguard": {"auth": {"invalid_user": True}}}}
    return None


def _sudo(message: str) -> dict[str, Any] | None:
    m = _PAM_FAIL.match(message)
    if m:
        kv = _pam_kv(m.group("kv"))
        user = kv.get("user") or kv.get("ruser") or kv.get("logname")
        fields: dict[str, Any] = {"sisguard": {"auth": {"reason": "authentication_failure"}}}
        if user:
            fields["user"] = {"name": user}
        return {"action": "sudo", "category": ["authentication", "process"], "type": ["start"],
                "outcome": "failure", "fields": fields}
    m = _SUDO.match(message)
    if m is None:
        return None
    head, kv = _sudo_kv(m.group("rest"))
    if "COMMAND" not in kv and "USER" not in kv:
        return None
    fields = {"user": {"name": m.group("user")}}
    if "USER" in kv:
        fields["user"]["effective"] = {"name": kv["USER"]}
    process: dict[str, Any] = {"name": "sudo"}
    if "COMMAND" in kv:
        process["command_line"] = kv["COMMAND"]
    if "PWD" in kv:
        process["working_directory"] = kv["PWD"]
    fields["process"] = process
    if "TTY" in kv:
        fields["sisguard"] = {"auth": {"tty": kv["TTY"]}}
    if head is None:
        return {"action": "sudo", "category": ["authentication", "process"],
                "type": ["start"], "outcome": "success", "fields": fields}
    reason = "denied"
    attempts = re.match(r"(\d+) incorrect password attempts?", head)
    if attempts:
        reason = "incorrect_password"
    elif "NOT in sudoers" in head:
        reason = "not_in_sudoers"
    elif "command not allowed" in head:
        reason = "command_not_allowed"
    auth = fields.setdefault("sisguard", {}).setdefault("auth", {})
    auth["reason"] = reason
    if attempts:
        auth["attempts"] = int(attempts.group(1))
    return {"action": "sudo", "category": ["authentication", "process"], "type": ["start"],
            "outcome": "failure", "fields": fields}


def _su(message: str) -> dict[str, Any] | None:
    for pattern, outcome in ((_SU_FAIL, "failure"), (_SU_OK, "success")):
        m = pattern.match(message)
        if m:
            return {"action": "su", "category": ["authentication"], "type": ["start"],
                    "outcome": outcome,
                    "fields": {"user": {"name": m.group("user"),
                                        "effective": {"name": m.group("target")}},
                               "sisguard": {"auth": {"tty": m.group("tty")}}}}
    m = _PAM_FAIL.match(message)
    if m:
        kv = _pam_kv(m.group("kv"))
        fields: dict[str, Any] = {"sisguard": {"auth": {"reason": "authentication_failure"}}}
        if kv.get("ruser") or kv.get("logname"):
            fields["user"] = {"name": kv.get("ruser") or kv.get("logname")}
        if kv.get("user"):
            fields.setdefault("user", {})["effective"] = {"name": kv["user"]}
        return {"action": "su", "category": ["authentication"], "type": ["start"],
                "outcome": "failure", "fields": fields}
    return None


def _merge(into: dict[str, Any], extra: dict[str, Any]) -> None:
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        else:
            into[key] = value


def auth_document(record: SyslogRecord, original: str, *, seen: float | None = None,
                  extra_programs: frozenset[str] = frozenset()) -> Document | None:
    """The ECS document for one syslog record, or None if its program is not ours.

    ``@timestamp`` is the time in the log line; ``event.created`` is ``seen`` (when the
    sensor read it). ``extra_programs`` are kept too, as ``log_line`` documents.
    """
    program = PROGRAMS.get(record.program)
    if program is None:
        if record.program not in extra_programs:
            return None
        program = record.program
    parsed = parse_auth_message(program, record.message)
    original = original.rstrip("\r\n")
    if parsed is None:
        doc = new_event(DATASET, category=["authentication"], type=["info"],
                        action="log_line", when=record.timestamp.timestamp())
    else:
        doc = new_event(DATASET, category=parsed["category"], type=parsed["type"],
                        action=parsed["action"], outcome=parsed.get("outcome"),
                        when=record.timestamp.timestamp())
        _merge(doc, parsed["fields"])
    process = doc.setdefault("process", {})
    process["name"] = program
    if record.pid is not None:
        process["pid"] = record.pid
    doc["event"]["original"] = original
    doc["event"]["created"] = timestamp(seen)
    doc["message"] = original
    doc["log"] = {"syslog": {"hostname": record.host, "appname": record.program}}
    return doc
