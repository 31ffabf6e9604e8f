"""An SSH login attempt for a user name with invalid UTF-8, through the real sshd.

sshd logs the name through rsyslog into the auth log; the agent follows that log. The
attacker is an unprivileged local user running the ssh client. Whatever bytes reach the
log (sshd escapes non-printable bytes as ``\\ooo`` itself; anything invalid left over is
the agent's ``\\xHH``), the event arrives with the name as valid text, and a marker login
attempted after it arrives too, also after an agent restart.
"""

from __future__ import annotations

import secrets
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from common.text import unescape
from tests.agent.sensors.test_auth import auth_events, sshd, syslog  # noqa: F401 - fixtures
from tests.harness import Agent, Collector, wait_for

# one rsyslogd owns /dev/log at a time: the files that start one share a worker
pytestmark = pytest.mark.xdist_group("syslog")

NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]


def ssh_as_nobody(port: int, user: bytes) -> subprocess.Popen[bytes]:
    """A password login attempt by the unprivileged attacker, for ``user`` (raw bytes)."""
    return subprocess.Popen(
        [*NOBODY, "env", "HOME=/tmp", "sshpass", "-p", "wrong-password", "ssh",
         "-p", str(port), "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
         "-o", "PreferredAuthentications=password", "-o", "PubkeyAuthentication=no",
         "-o", "NumberOfPasswordPrompts=1", "-o", "ConnectTimeout=10",
         "-l", user, "127.0.0.1", "true"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _invalid_user(collector: Collector, agent: Agent, names: tuple[str, ...]) -> dict[str, Any]:
    found = wait_for(lambda: [e for e in auth_events(collector)
                              if e.get("user", {}).get("name") in names
                              and e["event"]["action"] in ("ssh_invalid_user", "ssh_login")],
                     timeout=30, message=f"an ssh event for {names}\n"
                                         f"{agent.proc.tail() if agent.proc else ''}")
    return found[0]


@pytest.mark.service
def test_ssh_login_for_an_invalid_utf8_user_name_is_reported(
        sshd: int, syslog: Path,  # noqa: F811 - the fixtures imported above
        collector_factory: Callable[..., Collector], agent_factory: Callable[..., Agent],
        tmp_path: Path) -> None:
    collector = collector_factory()
    cfg = tmp_path / "agent.yml"
    cfg.write_text(f"sensor:\n  auth:\n    paths: ['{syslog}']\n    poll_interval: 0.2\n")
    agent = agent_factory(collector, "--sensors", "auth", "--config", str(cfg))
    token = secrets.token_hex(3)
    for round_ in (1, 2):
        raw = f"sg{token}{round_}".encode() + b"\xff\xfex"
        assert ssh_as_nobody(sshd, raw).wait(timeout=60) != 0
        marker = f"sgmark{token}{round_}"
        assert ssh_as_nobody(sshd, marker.encode()).wait(timeout=60) != 0
        prefix = f"sg{token}{round_}"
        # sshd's own escaping (octal), or ours (\xHH) for bytes that reach the log raw
        names = (prefix + "\\377\\376x", prefix + "\\xff\\xfex")
        bad = _invalid_user(collector, agent, names)
        assert bad["source"]["ip"] == "127.0.0.1"
        assert bad["user"]["name"] in bad["message"]
        # the same user writes raw invalid bytes into the auth log itself (syslog(3) is
        # open to every local user; rsyslog passes 8-bit bytes through): kept, escaped
        forged = f"sgraw{token}{round_}".encode() + b"\xff"
        subprocess.run([*NOBODY, "logger", "-p", "authpriv.info", "-t", "sshd",
                        b"Invalid user " + forged + b" from 127.0.0.1 port 2222"], check=True)
        raw_line = _invalid_user(collector, agent, (f"sgraw{token}{round_}\\xff",))
        assert unescape(raw_line["user"]["name"]) == forged
        _invalid_user(collector, agent, (marker,))
        if round_ == 1:
            assert agent.proc is not None
            agent.proc.stop()
            agent.start()
    for doc in collector.events():
        assert doc["event"]["action"] != "sensor_error" or \
            doc["sisguard"]["sensor"].get("stage") != "spool", doc
