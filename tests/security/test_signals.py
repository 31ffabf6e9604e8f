"""SIGTERM/SIGINT stop the agent and the collector within seconds, however long they ran.

A daemon whose main thread waits without a timeout only sees a signal that the kernel
happens to deliver to the main thread; one delivered to another thread (gRPC's, a
sensor's) used to leave it running until something else woke it. Each process here has
several streams open and has been idle long enough for its threads to settle into their
long waits; each must exit within 10 s, several times over.
"""

from __future__ import annotations

import ctypes
import functools
import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.harness import REPO, Agent, Collector, Proc, free_port_pair, wait_for

# long enough for every thread to block in its idle wait (the old hang needed no more)
IDLE = float(os.environ.get("SISGUARD_TEST_SIGNAL_IDLE", "12"))
EXIT_WITHIN = 10.0


def _has_events_from(collector: Collector, agent_id: str) -> bool:
    return any(e.get("agent", {}).get("id") == agent_id for e in collector.events())


def _idle(seconds: float, procs: list[Proc]) -> None:
    """Let the processes sit idle (a real wait on a condition that never comes true,
    while checking that they stay up)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for p in procs:
            assert p.alive(), p.tail()
        time.sleep(0.5)


def _signal_thread(pid: int, sig: int) -> None:
    """Deliver ``sig`` to a thread that is not the main one (``tgkill``), as the kernel
    may do with a process-directed signal."""
    tids = sorted(int(t) for t in os.listdir(f"/proc/{pid}/task") if int(t) != pid)
    assert tids, "no thread but the main one"
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.tgkill(pid, tids[-1], sig) != 0:
        raise OSError(ctypes.get_errno(), f"tgkill {pid} {tids[-1]}")


def _stop_within(proc: Proc, sig: int, *, to_thread: bool = False) -> float:
    """Send ``sig`` (to the process, or to one of its other threads); return how long
    it took to exit, failing beyond 10 s."""
    assert proc.popen is not None
    t0 = time.monotonic()
    if to_thread:
        _signal_thread(proc.popen.pid, sig)
    else:
        proc.popen.send_signal(sig)
    try:
        proc.popen.wait(timeout=EXIT_WITHIN)
    except subprocess.TimeoutExpired:
        pytest.fail(f"{proc.argv[2]} still running {EXIT_WITHIN}s after "
                    f"{signal.Signals(sig).name}{' to a thread' if to_thread else ''}"
                    f"\n{proc.tail()}")
    return time.monotonic() - t0


# how each set of processes is told to stop
WAYS = (("SIGTERM", signal.SIGTERM, False), ("SIGINT", signal.SIGINT, False),
        ("SIGTERM to a thread", signal.SIGTERM, True))


def test_sigterm_after_idle_stops_collector_and_agents(
        collector_factory: Callable[..., Collector],
        agent_factory: Callable[..., Agent]) -> None:
    """Three sets (a collector, two agents streaming to it), idle together, then each
    set stopped one way: one agent, the collector (a stream still open), the other agent
    (reconnecting by then)."""
    sets: list[tuple[Collector, list[Agent]]] = []
    for n in range(len(WAYS)):
        collector = collector_factory(name=f"collector{n}")
        agents = [agent_factory(collector, "--sensors", "inventory", name=f"agent{n}-{i}")
                  for i in range(2)]
        sets.append((collector, agents))
    procs: list[Proc] = []
    for collector, agents in sets:
        for a in agents:
            wait_for(functools.partial(_has_events_from, collector, a.agent_id), timeout=30,
                     message=f"events from {a.agent_id}")
        procs += [p for p in (collector.proc, *(a.proc for a in agents)) if p is not None]
    _idle(IDLE, procs)
    took: dict[str, list[float]] = {}
    for (collector, agents), (name, sig, to_thread) in zip(sets, WAYS, strict=True):
        assert collector.proc is not None and agents[0].proc and agents[1].proc
        took[name] = [_stop_within(p, sig, to_thread=to_thread)
                      for p in (agents[0].proc, collector.proc, agents[1].proc)]
    print("seconds to exit (agent, collector, reconnecting agent):", took)


def test_ctrl_c_stops_the_demo_and_both_programs_cleanly(tmp_path: Path) -> None:
    """Ctrl-C in a terminal is SIGINT to the demo's whole process group: the script
    stops the collector and the agent with one SIGTERM each, and they stop cleanly
    (nothing needed SIGKILL, nothing is left running)."""
    data = tmp_path / "demo"
    log = tmp_path / "demo.err"
    env = {**os.environ, "SISGUARD_DEMO_DATA": str(data),
           "SISGUARD_DEMO_PORT": str(free_port_pair())}
    with open(log, "wb") as err:
        demo = subprocess.Popen([str(REPO / "scripts" / "demo"), "--no-attack"], cwd=REPO,
                                env=env, stdin=subprocess.DEVNULL, stdout=err,
                                stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_for(lambda: b"Ctrl-C stops the demo" in log.read_bytes(), timeout=60,
                 message=f"the demo running\n{log.read_text(errors='replace')}")
        wait_for(lambda: (data / "agent.log").exists()
                 and b'"agent running"' in (data / "agent.log").read_bytes(),
                 timeout=30, message="the demo's agent running")
        children = [int(p) for p in subprocess.run(
            ["pgrep", "-g", str(demo.pid)], capture_output=True, text=True).stdout.split()
            if int(p) != demo.pid]
        os.killpg(demo.pid, signal.SIGINT)
        try:
            demo.wait(timeout=EXIT_WITHIN)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the demo still runs {EXIT_WITHIN}s after Ctrl-C\n"
                        f"{log.read_text(errors='replace')}")
        out = log.read_text(errors="replace")
        assert "ignored SIGTERM" not in out, out
        for name in ("collector.log", "agent.log"):
            text = (data / name).read_text(errors="replace")
            assert '"msg": "stopping"' in text, text[-2000:]
            assert "without a clean stop" not in text, text[-2000:]
        assert not [p for p in children if os.path.exists(f"/proc/{p}")], "left running"
    finally:
        if demo.poll() is None:
            os.killpg(demo.pid, signal.SIGKILL)
            demo.wait(timeout=10)
