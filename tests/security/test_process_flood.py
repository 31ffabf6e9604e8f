"""A local user floods the host with short processes to hide one among them.

uid 65534 runs tight ``/bin/true`` loops in a few shells for 10 s (bounded) while one
long-running marker process with a unique argv starts in the middle. The agent runs with
a deliberately small connector receive buffer so that the kernel overruns it. The marker
must be reported (by netlink or by the /proc sweep that follows an overrun), and every
loss must be reported as a count: either no overrun happened and every start arrived,
or sensor_error events say how many overruns there were and how many processes the
sweeps found (as many as the archive holds with ``found_by: sweep``).
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.harness import Agent, Collector, wait_for
from tests.security.test_process_exe import NOBODY, need_netlink

SHELLS = 3
SECONDS = 10
PER_SHELL = 20_000        # a bound besides the time


def _loss_reports(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e["sisguard"]["sensor"] for e in events
            if e["event"]["action"] == "sensor_error"
            and e.get("sisguard", {}).get("sensor", {}).get("reason") == "process events lost"]


def _found_by_sweep(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in events if e["event"]["dataset"] == "sisguard.process"
            and e["event"]["action"] == "exec"
            and e.get("sisguard", {}).get("process", {}).get("found_by") == "sweep"]


@pytest.mark.service
@pytest.mark.timeout(180)
def test_a_process_flood_hides_nothing_silently(
        tmp_path: Path, collector_factory: Callable[..., Collector],
        agent_factory: Callable[..., Agent]) -> None:
    need_netlink()
    cfg = tmp_path / "agent.yml"
    cfg.write_text(json.dumps({"sensor": {"process": {
        "receive_buffer": 16384, "loss_report_interval": "2s"}}}))
    collector = collector_factory()
    agent = agent_factory(collector, "--sensors", "process", "--config", str(cfg))
    assert agent.proc is not None
    wait_for(lambda: '"mode": "netlink"' in agent.proc.tail(200) if agent.proc else False,
             message="netlink mode in the agent log")
    marker = f"{30 + random.random():.9f}"      # sleep's argument, unique to this run
    loop = (f"echo $$; n=0; end=$((SECONDS+{SECONDS})); "
            f"while [ $SECONDS -lt $end ] && [ $n -lt {PER_SHELL} ]; do /bin/true; "
            "n=$((n+1)); done; echo $n")
    shells = [subprocess.Popen([*NOBODY, "bash", "-c", loop], cwd="/", text=True,
                               stdout=subprocess.PIPE) for _ in range(SHELLS)]
    sleeper: int | None = None
    try:
        assert shells[0].stdout is not None
        shell_pids = {int(s.stdout.readline()) for s in shells if s.stdout is not None}
        wait_for(lambda: len(collector.events()) > 50, timeout=20, interval=0.5,
                 message="the flood under way")
        out = subprocess.run([*NOBODY, "bash", "-c",
                              f"/bin/sleep {marker} >/dev/null 2>&1 & echo $!"], cwd="/",
                             capture_output=True, text=True, check=True, timeout=10)
        sleeper = int(out.stdout.split()[0])
        started = 0
        for s in shells:
            rest, _ = s.communicate(timeout=SECONDS + 60)
            started += int(rest.split()[-1])
        assert started > 1000, "the flood did not run"

        def marker_seen() -> list[dict[str, Any]]:
            return [e for e in collector.events() if e["event"]["action"] == "exec"
                    and e.get("process", {}).get("args") == ["/bin/sleep", marker]]

        docs = wait_for(marker_seen, timeout=60, interval=0.5,
                        message=f"the marker among the flood\n{agent.proc.tail()}")
        assert docs[0]["process"]["pid"] == sleeper
        assert docs[0]["user"]["id"] == "65534"

        def flood_seen() -> int:
            return sum(1 for e in collector.events() if e["event"]["action"] == "exec"
                       and e.get("process", {}).get("parent", {}).get("pid") in shell_pids)

        def accounted() -> bool:
            events = collector.events()
            reports = _loss_reports(events)
            if not reports:
                return flood_seen() >= started
            # every process a sweep reported is counted in a report
            return bool(sum(r["found_by_sweep"] for r in reports)
                        == len(_found_by_sweep(events)))

        wait_for(accounted, timeout=60, interval=1.0,
                 message="every start, or the loss reported with its count")
        events = collector.events()
        reports = _loss_reports(events)
        seen = flood_seen()
        print(f"flood: {started} starts, {seen} reported with their shell as parent, "
              f"loss reports: {reports}")
        if seen < started:        # something was lost: it must have been said
            assert reports, f"{started - seen} starts lost and nothing said so"
            assert sum(r["overruns"] + r["queue_dropped"] for r in reports) > 0
            assert reports[-1]["overruns_total"] == sum(r["overruns"] for r in reports)
    finally:
        for s in shells:
            with contextlib.suppress(ProcessLookupError):
                os.kill(s.pid, signal.SIGKILL)
            s.wait()
        if sleeper is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(sleeper, signal.SIGKILL)
