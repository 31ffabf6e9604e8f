"""A local user against the process sensor's executable hashing, with a real agent and
collector: a FIFO renamed over a running binary must not stall the sensor, a symlink
swapped in must not change the reported hash. The attacker is uid 65534 (setpriv).

The attack re-executes the running image through ``/proc/PID/exe`` after the swap: the
new process's ``exe`` link then reads ``<path> (deleted)``, so a sensor that opened the
path would open the FIFO (and block for good) or follow the symlink (and hash the
benign binary).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from tests.harness import Agent, Collector, in_ci, wait_for

NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]


def need_netlink() -> None:
    from agent.platform.linux.netlink import ConnectorError, ProcConnector
    reason = ""
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        reason = "needs root (netlink process connector, setpriv)"
    else:
        try:
            c = ProcConnector()
            c.open()
            c.close()
        except ConnectorError as e:
            reason = f"no netlink process connector here: {e}"
    if reason:
        if in_ci():
            pytest.fail(reason)
        pytest.skip(reason)


@pytest.fixture
def user_dir() -> Iterator[Path]:
    """A directory the attacker owns (under /tmp: the test's tmp_path is root-only)."""
    d = Path(tempfile.mkdtemp(prefix="sisguard-exe-"))
    os.chown(d, 65534, 65534)
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


def as_nobody(script: str, cwd: Path) -> str:
    return subprocess.run([*NOBODY, "bash", "-c", script], cwd=cwd, capture_output=True,
                          text=True, check=True, timeout=30).stdout


def starts(collector: Collector, pred: Callable[[dict[str, Any]], bool]) -> list[dict[str, Any]]:
    return [e for e in collector.events()
            if e["event"]["dataset"] == "sisguard.process" and e["event"]["action"] == "exec"
            and pred(e["process"])]


def kill_all(pids: list[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


@pytest.mark.service
@pytest.mark.timeout(120)
def test_a_fifo_or_a_link_over_a_running_binary_neither_stalls_nor_fools_the_sensor(
        user_dir: Path, collector_factory: Callable[..., Collector],
        agent_factory: Callable[..., Agent]) -> None:
    need_netlink()
    collector = collector_factory()
    agent = agent_factory(collector, "--sensors", "process")
    assert agent.proc is not None
    wait_for(lambda: '"mode": "netlink"' in agent.proc.tail(200) if agent.proc else False,
             message="netlink mode in the agent log")
    assert agent.proc.popen is not None
    agent_ps = psutil.Process(agent.proc.popen.pid)
    rss_before = agent_ps.memory_info().rss
    tag = secrets.token_hex(4)
    # the attacker's own build of sleep: its hash is not any system binary's
    as_nobody(f"cp /bin/sleep prog && printf 'sisguard-{tag}' >> prog && cp prog prog2", user_dir)
    image = hashlib.sha256((user_dir / "prog").read_bytes()).hexdigest()
    true_hash = hashlib.sha256(Path("/bin/true").read_bytes()).hexdigest()
    pids: list[int] = []
    try:
        # 1. a FIFO renamed over the running binary, then the image run again
        out = as_nobody(
            "./prog 60 >/dev/null 2>&1 & P=$!; echo $P; sleep 0.2; mkfifo f && mv f prog; "
            "/proc/$P/exe 30 >/dev/null 2>&1 & echo $!", user_dir).split()
        running, rerun = int(out[0]), int(out[1])
        pids += [running, rerun]
        assert (user_dir / "prog").is_fifo()
        # 2. a symlink to a benign binary swapped in, and the image run again
        out = as_nobody(
            "./prog2 60 >/dev/null 2>&1 & P=$!; echo $P; sleep 0.2; rm prog2; "
            "ln -s /bin/true prog2; /proc/$P/exe 31 >/dev/null 2>&1 & echo $!",
            user_dir).split()
        running2, rerun2 = int(out[0]), int(out[1])
        pids += [running2, rerun2]
        # 3. marker processes after the attack, one now and one a moment later
        marker = f"sisguard-marker-{tag}"
        first = as_nobody(f"sh -c 'sleep 2' {marker}-1 >/dev/null 2>&1 & echo $!", user_dir).split()
        pids += [int(first[0])]

        def seen(name: str) -> list[dict[str, Any]]:
            return starts(collector, lambda p: name in (p.get("args") or []))

        wait_for(lambda: seen(f"{marker}-1"), timeout=15,
                 message=f"the first marker after the FIFO\n{agent.proc.tail()}")
        second = as_nobody(f"sh -c 'sleep 2' {marker}-2 >/dev/null 2>&1 & echo $!",
                           user_dir).split()
        pids += [int(second[0])]
        wait_for(lambda: seen(f"{marker}-2"), timeout=15, message="the second marker")
        by_pid = {e["process"]["pid"]: e for e in starts(
            collector, lambda p: p["pid"] in (running, rerun, running2, rerun2))}
        assert set(by_pid) == {running, rerun, running2, rerun2}
        for pid in (running, rerun, running2, rerun2):
            p = by_pid[pid]["process"]
            assert p["hash"]["sha256"] == image, (pid, p)
            assert p["hash"]["sha256"] != true_hash
        assert by_pid[rerun]["process"]["executable"] == str(user_dir / "prog")
        assert by_pid[rerun2]["process"]["executable"] == str(user_dir / "prog2")
        assert agent.proc.alive()
        rss_after = agent_ps.memory_info().rss
        print(f"agent RSS {rss_before / 2**20:.1f} MiB before the attack, "
              f"{rss_after / 2**20:.1f} MiB after")
        assert rss_after < rss_before + 32 * 2**20, "the agent grew during the attack"
    finally:
        kill_all(pids)
