"""The auth sensor: the follower (rotation, truncation, restart) and, end to end, a real
rsyslogd, a real sshd, real ssh/sudo/su/useradd through a real agent and collector."""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.platform.linux.logfollow import FileFollower
from tests.harness import Agent, Collector, free_port, in_ci, port_open, wait_for

# one rsyslogd owns /dev/log at a time: the files that start one share a worker
pytestmark = pytest.mark.xdist_group("syslog")

REPO = Path(__file__).resolve().parents[3]


# --- the follower, on files this test writes --------------------------------------------

def test_follower_survives_rename_and_truncation(tmp_path: Path) -> None:
    log = tmp_path / "auth.log"
    log.write_text("old\n")
    f = FileFollower(log, None, start_at_end=True, grace=0.0)
    f.prime()
    with open(log, "a") as w:
        w.write("a1\na2\npart")
    assert f.poll() == [b"a1\n", b"a2\n"]
    with open(log, "a") as w:
        w.write("ial\n")
    os.rename(log, tmp_path / "auth.log.1")
    log.write_text("b1\n")
    assert f.poll() == [b"partial\n", b"b1\n"]
    assert f.poll() == []
    with open(log, "a") as w:
        w.write("b2\n")
    assert f.poll() == [b"b2\n"]
    os.truncate(log, 0)
    with open(log, "a") as w:
        w.write("c1\n")
    assert f.poll() == [b"c1\n"]
    # truncated and rewritten past our offset before we looked: the head changed
    log.write_text("d1 and something longer than before\n")
    assert f.poll() == [b"d1 and something longer than before\n"]
    f.close()


def test_follower_resumes_after_restart_even_across_a_rotation(tmp_path: Path) -> None:
    log = tmp_path / "auth.log"
    log.write_text("l1\n")
    f = FileFollower(log, None, start_at_end=False, grace=0.0)
    assert f.poll() == [b"l1\n"]
    state = f.state()
    f.close()
    with open(log, "a") as w:
        w.write("l2\n")
    g = FileFollower(log, state, start_at_end=True, grace=0.0)
    assert g.poll() == [b"l2\n"]
    state = g.state()
    g.close()
    with open(log, "a") as w:
        w.write("l3\n")
    os.rename(log, tmp_path / "auth.log.1")
    log.write_text("m1\n")
    h = FileFollower(log, state, start_at_end=True, grace=0.0)
    assert h.poll() == [b"l3\n", b"m1\n"]
    h.close()


def test_follower_waits_for_a_missing_file(tmp_path: Path) -> None:
    log = tmp_path / "secure"
    f = FileFollower(log, None, start_at_end=True, grace=0.0)
    f.prime()
    assert f.poll() == []
    log.write_text("x1\n")
    assert f.poll() == [b"x1\n"]
    f.close()


# --- real daemons ---------------------------------------------------------------------------

def require(ok: object, reason: str) -> None:
    """A missing service fails in CI and skips elsewhere."""
    if not ok:
        if in_ci():
            pytest.fail(reason)
        pytest.skip(reason)


def _dev_log_alive() -> bool:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        s.connect("/dev/log")
        return True
    except OSError:
        return False
    finally:
        s.close()


@pytest.fixture(scope="module")
def syslog(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A real rsyslogd owning /dev/log, writing auth/authpriv to a file (Debian 12 format)."""
    require(os.geteuid() == 0, "needs root (sshd, useradd, /dev/log)")
    rsyslogd = shutil.which("rsyslogd")
    require(rsyslogd, "rsyslogd missing: apt-get install rsyslog")
    assert rsyslogd is not None
    require(not _dev_log_alive(), "another syslog daemon owns /dev/log")
    if os.path.lexists("/dev/log"):
        os.unlink("/dev/log")  # a stale socket with no daemon behind it
    d = tmp_path_factory.mktemp("syslog")
    conf = d / "rsyslog.conf"
    conf.write_text(f'global(workDirectory="{d}")\n'
                    'module(load="imuxsock" SysSock.Use="on")\n'
                    f'auth,authpriv.* action(type="omfile" file="{d}/auth.log")\n')
    out = open(d / "rsyslogd.out", "wb")  # noqa: SIM115
    proc = subprocess.Popen([rsyslogd, "-n", "-f", str(conf), "-i", str(d / "pid")],
                            stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: _dev_log_alive(), timeout=10, message="rsyslogd on /dev/log")
        marker = f"sisguard-probe-{secrets.token_hex(4)}"
        subprocess.run(["logger", "-p", "authpriv.info", "-t", "probe", marker], check=True)
        wait_for(lambda: (d / "auth.log").exists() and marker in (d / "auth.log").read_text(),
                 timeout=10, message="rsyslogd writing auth.log")
        yield d / "auth.log"
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        out.close()


@pytest.fixture(scope="module")
def sshd(tmp_path_factory: pytest.TempPathFactory, syslog: Path) -> Iterator[int]:
    """A real sshd (Debian's openssh-server) on a random loopback port, logging via syslog."""
    binary = Path("/usr/sbin/sshd")
    require(binary.exists() and shutil.which("sshpass") and shutil.which("ssh"),
            "apt-get install openssh-server openssh-client sshpass")
    d = tmp_path_factory.mktemp("sshd")
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(d / "host_key")],
                   check=True)
    (d / "sshd_config").write_text(
        f"HostKey {d}/host_key\nPasswordAuthentication yes\nKbdInteractiveAuthentication no\n"
        "UsePAM yes\nPidFile none\nMaxAuthTries 10\nMaxStartups 50\nPermitRootLogin no\n")
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
    port = free_port()
    proc = subprocess.Popen([str(binary), "-D", "-p", str(port), "-o", "ListenAddress=127.0.0.1",
                             "-f", str(d / "sshd_config")],
                            stdout=subprocess.DEVNULL, stderr=open(d / "err", "wb"))  # noqa: SIM115
    try:
        wait_for(lambda: port_open(port), timeout=10, message=f"sshd on {port}")
        yield port
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture
def throwaway_user() -> Iterator[Callable[[], tuple[str, str]]]:
    """Creates (when called) a user with a known password and sudo rights; deletes it after."""
    made: list[str] = []

    def make() -> tuple[str, str]:
        name, password = f"sgt{secrets.token_hex(4)}", f"Pw-{secrets.token_hex(8)}"
        subprocess.run(["useradd", "-m", "-s", "/bin/sh", name], check=True)
        made.append(name)
        subprocess.run(["chpasswd"], input=f"{name}:{password}\n", text=True, check=True)
        Path(f"/etc/sudoers.d/{name}").write_text(f"{name} ALL=(ALL) ALL\n")
        os.chmod(f"/etc/sudoers.d/{name}", 0o440)
        return name, password

    yield make
    for name in made:
        Path(f"/etc/sudoers.d/{name}").unlink(missing_ok=True)
        subprocess.run(["userdel", "-r", name], capture_output=True)


def ssh(port: int, user: str, password: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        ["sshpass", "-p", password, "ssh", "-p", str(port), "-o", "StrictHostKeyChecking=no",
         "-o", "UserKnownHostsFile=/dev/null", "-o", "PreferredAuthentications=password",
         "-o", "PubkeyAuthentication=no", "-o", "NumberOfPasswordPrompts=1",
         "-o", "ConnectTimeout=10", f"{user}@127.0.0.1", "true"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def auth_events(collector: Collector, **match: Any) -> list[dict[str, Any]]:
    def get(doc: dict[str, Any], dotted: str) -> Any:
        for part in dotted.split("."):
            doc = doc.get(part, {}) if isinstance(doc, dict) else {}
        return doc if doc != {} else None

    return [e for e in collector.events()
            if e.get("event", {}).get("dataset") == "sisguard.auth"
            and all(get(e, k.replace("__", ".")) == v for k, v in match.items())]


@pytest.mark.service
def test_real_ssh_sudo_and_account_events_reach_the_collector(
        sshd: int, syslog: Path, throwaway_user: Callable[[], tuple[str, str]],
        collector_factory: Callable[..., Collector], agent_factory: Callable[..., Agent],
        tmp_path: Path) -> None:
    rules = REPO / "rules"
    collector = collector_factory(*(["--rules", str(rules)] if rules.is_dir() else []))
    cfg = tmp_path / "agent.yml"
    cfg.write_text(f"sensor:\n  auth:\n    paths: ['{syslog}']\n    poll_interval: 0.2\n")
    agent = agent_factory(collector, "--sensors", "auth", "--config", str(cfg))
    user, password = throwaway_user()

    failures = [ssh(sshd, user, "wrong-password") for _ in range(6)]
    for p in failures:
        assert p.wait(timeout=60) != 0
    assert ssh(sshd, user, password).wait(timeout=60) == 0
    as_user = ["runuser", "-u", user, "--", "sh", "-c"]
    bad = subprocess.run([*as_user, "echo nope | sudo -S -k /usr/bin/id -u"],
                         capture_output=True, text=True)
    assert bad.returncode != 0
    good = subprocess.run([*as_user, f"echo '{password}' | sudo -S -k /usr/bin/id -u"],
                          capture_output=True, text=True)
    assert good.stdout.strip() == "0", good.stderr
    subprocess.run(["userdel", "-r", user], capture_output=True, check=True)

    def ssh_failures() -> list[dict[str, Any]]:
        return auth_events(collector, event__action="ssh_login", event__outcome="failure",
                           user__name=user)

    wait_for(lambda: len(ssh_failures()) >= 6, timeout=60,
             message=f"6 failed ssh logins\n{agent.proc.tail() if agent.proc else ''}")
    fails = ssh_failures()
    assert len(fails) == 6
    assert all(e["source"]["ip"] == "127.0.0.1" and e["source"]["port"] > 0 for e in fails)
    assert all(e["sisguard"]["auth"]["method"] == "password" for e in fails)
    assert all(e["message"] == e["event"]["original"] and "Failed password" in e["message"]
               for e in fails)
    ok = wait_for(lambda: auth_events(collector, event__action="ssh_login",
                                      event__outcome="success", user__name=user),
                  timeout=30, message="the successful ssh login")
    assert len(ok) == 1 and ok[0]["source"]["ip"] == "127.0.0.1"
    sudo_ok = wait_for(lambda: auth_events(collector, event__action="sudo",
                                           event__outcome="success", user__name=user),
                       timeout=30, message="sudo success")
    assert sudo_ok[0]["user"]["effective"]["name"] == "root"
    assert sudo_ok[0]["process"]["command_line"] == "/usr/bin/id -u"
    sudo_bad = wait_for(lambda: auth_events(collector, event__action="sudo",
                                            event__outcome="failure", user__name=user),
                        timeout=30, message="sudo failure")
    assert {e["sisguard"]["auth"]["reason"] for e in sudo_bad} >= {"incorrect_password"}
    for action in ("user_created", "password_changed", "user_deleted"):
        iam = wait_for(lambda a=action: auth_events(  # type: ignore[misc]
            collector, event__action=a, user__name=user), timeout=30, message=action)
        assert iam[0]["event"]["category"] == ["iam"]
    assert auth_events(collector, event__action="group_created", group__name=user)
    if rules.is_dir():
        def alert_names() -> set[str]:
            return {str(a.get("rule", {}).get("name", "")).lower() for a in collector.alerts()}

        wait_for(lambda: {"ssh brute force from one address",
                          "ssh login success after brute force"} <= alert_names(),
                 timeout=30, message="the SSH brute-force alerts")


@pytest.mark.service
def test_rotation_truncation_and_restart_lose_and_repeat_nothing(
        syslog: Path, collector_factory: Callable[..., Collector],
        agent_factory: Callable[..., Agent], tmp_path: Path) -> None:
    tag = f"sgrot{secrets.token_hex(3)}"
    collector = collector_factory()
    cfg = tmp_path / "agent.yml"
    cfg.write_text(f"sensor:\n  auth:\n    paths: ['{syslog}']\n    poll_interval: 0.2\n"
                   f"    rotate_grace: 2s\n    extra_programs: [{tag}]\n")
    agent = agent_factory(collector, "--sensors", "auth", "--config", str(cfg))
    pid = int((syslog.parent / "pid").read_text())

    def write(first: int, last: int) -> None:
        for i in range(first, last + 1):
            subprocess.run(["logger", "-p", "authpriv.info", "-t", tag, f"line {i}"], check=True)

    def seen() -> list[int]:
        return sorted(int(e["event"]["original"].rsplit(" ", 1)[1])
                      for e in collector.events() if e.get("process", {}).get("name") == tag)

    def rotate(n: int) -> None:
        os.rename(syslog, syslog.with_name(f"auth.log.{tag}.{n}"))
        os.kill(pid, signal.SIGHUP)  # what logrotate's postrotate does

    def until(n: int) -> None:
        wait_for(lambda: len(seen()) >= n, timeout=30,
                 message=f"{n} lines\n{agent.proc.tail() if agent.proc else ''}")

    write(1, 10)
    rotate(1)           # rename + HUP while lines may still be in flight
    write(11, 20)
    until(20)
    os.truncate(syslog, 0)  # copytruncate
    write(21, 30)
    until(30)
    assert agent.proc is not None
    agent.proc.stop()   # down: lines arrive, the log rotates, more lines arrive
    write(31, 35)
    rotate(2)
    write(36, 40)
    agent.start()
    until(40)
    write(41, 45)
    until(45)
    assert seen() == list(range(1, 46))
