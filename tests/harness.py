"""Real processes on loopback for integration tests: a collector, enrolled agents.

Nothing here fakes gRPC or TLS: each helper starts ``sisguard-collector`` or
``sisguard-agent`` as a child process, exactly as an operator would.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
# The agent's tests also run on Python 3.9 (scripts/test); the collector needs 3.11+, so
# it may run on another interpreter than the test's own.
COLLECTOR_PYTHON = os.environ.get("SISGUARD_COLLECTOR_PYTHON", sys.executable)
T = TypeVar("T")


def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for a child process: this checkout's stubs (proto/) first, ahead
    of whatever an editable install of another checkout maps ``sisguard`` to."""
    path = os.pathsep.join(p for p in (str(REPO / "proto"), os.environ.get("PYTHONPATH"))
                           if p)
    return {**os.environ, "PYTHONPATH": path, **(extra or {})}


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() == "true"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def free_port_pair() -> int:
    """A port p such that p and p+1 are both free (events + enrollment)."""
    for _ in range(100):
        p = free_port()
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", p + 1))
            except OSError:
                continue
        return p
    raise RuntimeError("no free port pair")


def wait_for(predicate: Callable[[], T | None], *, timeout: float = 10.0, interval: float = 0.05,
             message: str = "condition") -> T:
    """Poll until predicate() is truthy; fail with ``message`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {message} (last: {last!r})")


def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


def cli(program: str, *args: str, check: bool = True, timeout: float = 60,
        env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    module = {"agent": "agent.cli", "collector": "collector.cli",
              "rules": "collector.rules_cli"}[program]
    python = sys.executable if program == "agent" else COLLECTOR_PYTHON
    result = subprocess.run([python, "-m", module, *args], capture_output=True,
                            text=True, timeout=timeout, cwd=REPO,
                            env=child_env(env))
    if check and result.returncode != 0:
        raise AssertionError(f"sisguard-{program} {' '.join(args)} failed "
                             f"({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result


@dataclass
class Proc:
    """A child process whose output goes to a log file (read it when a test fails)."""

    argv: list[str]
    log: Path
    popen: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        out = open(self.log, "ab")  # noqa: SIM115 - owned by the child
        self.popen = subprocess.Popen(self.argv, stdout=out, stderr=subprocess.STDOUT,
                                      cwd=REPO, start_new_session=True, env=child_env())
        out.close()

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.popen is not None and self.popen.poll() is None:
            self.popen.send_signal(sig)
            try:
                self.popen.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(timeout=5)

    def stop(self) -> None:
        self.kill(signal.SIGTERM)

    def since(self, offset: int) -> str:
        """What the process logged after byte ``offset``."""
        try:
            with open(self.log, "rb") as f:
                f.seek(offset)
                return f.read().decode(errors="replace")
        except OSError:
            return ""

    def tail(self, n: int = 40) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""


@dataclass
class Collector:
    data_dir: Path
    port: int = field(default_factory=free_port_pair)
    extra: list[str] = field(default_factory=list)
    fingerprint: str = ""
    proc: Proc | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def init(self) -> None:
        out = cli("collector", "init", "--data-dir", str(self.data_dir),
                  "--listen", self.address).stdout
        self.fingerprint = next(line.split(" ", 1)[1] for line in out.splitlines()
                                if line.startswith("ca-fingerprint: "))

    def start(self) -> None:
        if not self.fingerprint:
            self.init()
        self.proc = Proc([COLLECTOR_PYTHON, "-m", "collector.cli", "run", "--data-dir",
                          str(self.data_dir), "--listen", self.address, *self.extra],
                         self.data_dir / "collector.log")
        self.proc.start()
        wait_for(lambda: port_open(self.port) and port_open(self.port + 1), timeout=20,
                 message=f"collector on {self.address}\n{self.proc.tail()}")

    def token(self, *args: str) -> str:
        return cli("collector", "token", "create", "--data-dir", str(self.data_dir),
                   *args).stdout.strip()

    def events(self) -> list[dict[str, Any]]:
        return list(read_jsonl(self.data_dir / "archive", "events-"))

    def alerts(self) -> list[dict[str, Any]]:
        return list(read_jsonl(self.data_dir / "archive", "alerts-"))


def read_jsonl(directory: Path, prefix: str) -> Iterator[dict[str, Any]]:
    """The complete lines of the archive files, read while the collector appends to
    them: one snapshot of each file, cut after its last newline. (Iterating an open file
    instead passed over a line's first part at the end of the data, then read its rest,
    appended meanwhile, as a line of its own: a fragment that did not parse, seen once
    in a full run.)"""
    for path in sorted(directory.glob(f"{prefix}*.jsonl")):
        data = path.read_bytes()
        for line in data[:data.rfind(b"\n") + 1].splitlines():
            yield json.loads(line)


@dataclass
class Agent:
    state_dir: Path
    collector: Collector
    args: list[str] = field(default_factory=list)
    agent_id: str = ""
    proc: Proc | None = None

    def enroll(self, *, org: str = "test-org", org_id: str | None = None) -> str:
        token = self.collector.token("--org", org, *(("--org-id", org_id) if org_id else ()))
        out = cli("agent", "enroll", "--collector", self.collector.address, "--token", token,
                  "--ca-fingerprint", self.collector.fingerprint,
                  "--state-dir", str(self.state_dir)).stdout
        self.agent_id = out.split("agent id ", 1)[1].split(",", 1)[0].strip()
        return self.agent_id

    def start(self) -> None:
        if not self.agent_id:
            self.enroll()
        log = self.state_dir / "agent.log"
        offset = log.stat().st_size if log.exists() else 0
        # hermetic: the host's own nginx/Apache configs are not read unless a test asks
        hermetic = [] if "--web-roots" in self.args else ["--web-roots", "off"]
        self.proc = Proc([sys.executable, "-m", "agent.cli", "run", "--state-dir",
                          str(self.state_dir), *hermetic, *self.args], log)
        self.proc.start()
        proc = self.proc

        def started() -> str | None:
            text = proc.since(offset)
            return text if "agent running" in text else None

        text = wait_for(started, timeout=20, message=f"agent start\n{proc.tail()}")
        if '"sensor started", "sensor": "fim"' in text:
            # the first scans are done: a change from now on is reported, not baselined
            wait_for(lambda: '"fim ready"' in proc.since(offset), timeout=60,
                     message=f"the agent's first FIM scans\n{proc.tail()}")

    def spool(self) -> dict[str, Any]:
        status = json.loads(cli("agent", "status", "--state-dir", str(self.state_dir)).stdout)
        return dict(status["spool"] or {})
