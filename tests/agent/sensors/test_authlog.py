"""The auth line parser: real lines from Debian 12 (sshd, sudo, su, shadow-utils)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.sensors.authlog import auth_document, parse_syslog_line

NOW = dt.datetime(2026, 11, 29, 17, 0, 0, tzinfo=dt.timezone.utc)


def doc_for(line: str) -> dict[str, Any]:
    record = parse_syslog_line(line, NOW)
    assert record is not None, line
    doc = auth_document(record, line)
    assert doc is not None, line
    return doc


def test_rfc3339_and_classic_timestamps() -> None:
    a = parse_syslog_line("2026-11-29T16:35:12.123456+00:00 vm sshd[9]: hello", NOW)
    assert a is not None
    assert a.timestamp == dt.datetime(2026, 11, 29, 16, 35, 12, 123456, tzinfo=dt.timezone.utc)
    assert (a.host, a.program, a.pid, a.message) == ("vm", "sshd", 9, "hello")
    b = parse_syslog_line("Nov 29 16:35:12 vm sudo: hello", NOW)
    assert b is not None
    assert (b.timestamp.month, b.timestamp.day, b.timestamp.hour) == (11, 29, 16)
    assert b.timestamp.year == 2026 and b.pid is None and b.program == "sudo"
    # a December line read in January belongs to the previous year
    c = parse_syslog_line("Dec 31 23:59:59 vm su[1]: x", dt.datetime(2027, 1, 1, 0, 5,
                                                                     tzinfo=dt.timezone.utc))
    assert c is not None and c.timestamp.year == 2026
    d = parse_syslog_line("Nov  3 01:02:03 vm su[1]: x", NOW)
    assert d is not None and d.timestamp.day == 3
    e = parse_syslog_line("2026-11-29T16:35:12Z vm sshd[9]: hi", NOW)
    assert e is not None and e.timestamp.tzinfo is not None


@pytest.mark.parametrize(("message", "outcome", "user", "ip", "port", "extra"), [
    ("Failed password for sgtest1 from 127.0.0.1 port 55612 ssh2", "failure", "sgtest1",
     "127.0.0.1", 55612, {"method": "password"}),
    ("Failed password for invalid user nosuch from 10.1.2.3 port 4 ssh2", "failure", "nosuch",
     "10.1.2.3", 4, {"method": "password", "invalid_user": True}),
    ("Accepted password for sgtest1 from 127.0.0.1 port 60480 ssh2", "success", "sgtest1",
     "127.0.0.1", 60480, {"method": "password"}),
    ("Accepted publickey for deploy from 2001:db8::7 port 50022 ssh2: ED25519 SHA256:abc",
     "success", "deploy", "2001:db8::7", 50022, {"method": "publickey"}),
    ("Failed password for user with space from 10.0.0.1 port 22 ssh2", "failure",
     "user with space", "10.0.0.1", 22, {"method": "password"}),
])
def test_sshd_logins(message: str, outcome: str, user: str, ip: str, port: int,
                     extra: dict[str, Any]) -> None:
    line = f"2026-11-29T16:45:11.983873+00:00 vm sshd[9944]: {message}"
    doc = doc_for(line)
    assert doc["event"]["action"] == "ssh_login"
    assert doc["event"]["category"] == ["authentication"]
    assert doc["event"]["outcome"] == outcome
    assert doc["user"]["name"] == user
    assert doc["source"] == {"ip": ip, "port": port}
    assert doc["sisguard"]["auth"] == extra
    assert doc["process"] == {"name": "sshd", "pid": 9944}
    assert doc["message"] == doc["event"]["original"] == line
    assert doc["@timestamp"] == "2026-11-29T16:45:11.983873Z"


def test_sshd_invalid_user_line_is_not_a_login_attempt() -> None:
    doc = doc_for("Nov 29 16:45:15 vm sshd[9984]: Invalid user nosuch from 127.0.0.1 port 5")
    assert doc["event"]["action"] == "ssh_invalid_user"
    assert doc["user"]["name"] == "nosuch" and doc["sisguard"]["auth"]["invalid_user"] is True


def test_repeated_message_is_unwrapped() -> None:
    doc = doc_for("Nov 29 16:45:15 vm sshd[1]: message repeated 3 times: [ Failed password "
                  "for root from 203.0.113.9 port 4000 ssh2]")
    assert doc["event"]["action"] == "ssh_login" and doc["event"]["outcome"] == "failure"
    assert doc["sisguard"]["auth"]["repeated"] == 3


def test_sudo_success_and_failures() -> None:
    ok = doc_for("2026-11-29T16:45:20.174725+00:00 vm sudo:  sgtest1 : PWD=/tmp/rs ; "
                 "USER=root ; COMMAND=/usr/bin/id -u ; echo")
    assert ok["event"]["action"] == "sudo" and ok["event"]["outcome"] == "success"
    assert ok["event"]["category"] == ["authentication", "process"]
    assert ok["user"] == {"name": "sgtest1", "effective": {"name": "root"}}
    assert ok["process"]["command_line"] == "/usr/bin/id -u ; echo"
    assert ok["process"]["working_directory"] == "/tmp/rs"
    bad = doc_for("Nov 29 16:45:20 vm sudo:  sgtest1 : 3 incorrect password attempts ; "
                  "TTY=pts/0 ; PWD=/home/x ; USER=root ; COMMAND=/usr/bin/true")
    assert bad["event"]["outcome"] == "failure"
    assert bad["sisguard"]["auth"] == {"tty": "pts/0", "reason": "incorrect_password",
                                       "attempts": 3}
    pam = doc_for("Nov 29 16:45:18 vm sudo: pam_unix(sudo:auth): authentication failure; "
                  "logname= uid=1001 euid=0 tty= ruser=sgtest1 rhost=  user=sgtest1")
    assert pam["event"]["action"] == "sudo" and pam["event"]["outcome"] == "failure"
    assert pam["user"]["name"] == "sgtest1"
    denied = doc_for("Nov 29 16:45:18 vm sudo:    eve : user NOT in sudoers ; TTY=pts/1 ; "
                     "PWD=/ ; USER=root ; COMMAND=/bin/sh")
    assert denied["sisguard"]["auth"]["reason"] == "not_in_sudoers"


def test_su() -> None:
    ok = doc_for("Nov 29 16:45:20 vm su[10014]: (to root) bob on pts/0")
    assert (ok["event"]["action"], ok["event"]["outcome"]) == ("su", "success")
    assert ok["user"] == {"name": "bob", "effective": {"name": "root"}}
    bad = doc_for("Nov 29 16:45:20 vm su[10014]: FAILED SU (to root) bob on pts/0")
    assert bad["event"]["outcome"] == "failure" and bad["user"]["effective"]["name"] == "root"


@pytest.mark.parametrize(("program", "message", "action", "types", "user", "group"), [
    ("useradd", "new user: name=sgt, UID=1001, GID=1001, home=/home/sgt, shell=/bin/sh, "
     "from=none", "user_created", ["user", "creation"], "sgt", None),
    ("useradd", "new group: name=sgt, GID=1001", "group_created", ["group", "creation"],
     None, "sgt"),
    ("groupadd", "new group: name=devs, GID=1002", "group_created", ["group", "creation"],
     None, "devs"),
    ("userdel", "delete user 'sgt'", "user_deleted", ["user", "deletion"], "sgt", None),
    ("groupdel", "group 'devs' removed", "group_deleted", ["group", "deletion"], None, "devs"),
    ("usermod", "add 'sgt' to group 'sudo'", "user_added_to_group", ["group", "change"],
     "sgt", "sudo"),
    ("gpasswd", "user sgt added by root to group devs", "user_added_to_group",
     ["group", "change"], "sgt", "devs"),
    ("gpasswd", "user sgt removed by root from group devs", "user_removed_from_group",
     ["group", "change"], "sgt", "devs"),
    ("usermod", "change user 'sgt' shell from '/bin/sh' to '/bin/bash'", "user_modified",
     ["user", "change"], "sgt", None),
    ("chpasswd", "pam_unix(chpasswd:chauthtok): password changed for sgt", "password_changed",
     ["user", "change"], "sgt", None),
    ("passwd", "pam_unix(passwd:chauthtok): password changed for root", "password_changed",
     ["user", "change"], "root", None),
])
def test_account_management(program: str, message: str, action: str, types: list[str],
                            user: str | None, group: str | None) -> None:
    doc = doc_for(f"2026-11-29T16:45:20.2+00:00 vm {program}[10016]: {message}")
    assert doc["event"]["category"] == ["iam"]
    assert doc["event"]["action"] == action and doc["event"]["type"] == types
    assert doc.get("user", {}).get("name") == user
    assert doc.get("group", {}).get("name") == group
    assert doc["process"]["name"] == program


def test_unparsed_lines_of_our_programs_are_kept_and_others_dropped() -> None:
    line = "Nov 29 16:45:13 vm sshd[9944]: Connection closed by authenticating user x [preauth]"
    doc = doc_for(line)
    assert doc["event"]["action"] == "log_line" and doc["event"]["original"] == line
    record = parse_syslog_line("Nov 29 16:45:13 vm CRON[5]: pam_unix(cron:session): x", NOW)
    assert record is not None and auth_document(record, "x") is None
    assert parse_syslog_line("garbage without a timestamp", NOW) is None


_text = st.text(alphabet=st.characters(blacklist_categories=["Cs"], blacklist_characters="\n"),
                max_size=200)


@given(_text)
def test_any_line_parses_or_is_refused_without_error(line: str) -> None:
    record = parse_syslog_line(line, NOW)
    if record is not None:
        doc = auth_document(record, line)
        if doc is not None:
            assert doc["message"] == line.rstrip("\r\n")


@given(program=st.sampled_from(["sshd", "sudo", "su", "useradd", "usermod", "gpasswd"]),
       message=_text, pid=st.integers(1, 4_194_304))
def test_any_message_of_our_programs_becomes_a_document(program: str, message: str,
                                                        pid: int) -> None:
    line = f"2026-11-29T16:35:12.123456+00:00 web1 {program}[{pid}]: {message}"
    doc = doc_for(line)
    assert doc["process"]["pid"] == pid
    assert doc["event"]["dataset"] == "sisguard.auth"
    assert doc["event"]["original"] == line.rstrip("\r\n")


@given(user=st.from_regex(r"[a-z_][a-z0-9_.-]{0,31}", fullmatch=True),
       ip=st.ip_addresses().map(str), port=st.integers(1, 65535),
       ok=st.booleans(), invalid=st.booleans())
def test_sshd_login_fields_round_trip(user: str, ip: str, port: int, ok: bool,
                                      invalid: bool) -> None:
    verdict = "Accepted" if ok else "Failed"
    who = f"invalid user {user}" if invalid and not ok else user
    doc = doc_for(f"Nov 29 16:35:12 h sshd[1]: {verdict} password for {who} from {ip} "
                  f"port {port} ssh2")
    assert doc["user"]["name"] == user
    assert doc["source"] == {"ip": ip, "port": port}
    assert doc["event"]["outcome"] == ("success" if ok else "failure")
    assert doc["sisguard"]["auth"].get("invalid_user", False) == (invalid and not ok)


@given(when=st.datetimes(min_value=dt.datetime(2000, 1, 1), max_value=dt.datetime(2099, 1, 1),
                         timezones=st.just(dt.timezone.utc)))
def test_rfc3339_timestamps_round_trip(when: dt.datetime) -> None:
    record = parse_syslog_line(f"{when.isoformat()} h su[1]: x", NOW)
    assert record is not None and record.timestamp == when
