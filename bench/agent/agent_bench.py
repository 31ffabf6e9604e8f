#!/usr/bin/env python3
"""Agent cost with every sensor on: idle, then under 50 process starts per second.

Starts a real collector and a real enrolled agent (tests.harness), FIM over a generated
20,000-file tree in /tmp, and prints the agent's median CPU (% of one core) and RSS while
idle for ``--idle`` minutes, then while ``--rate`` processes per second are started for
``--load`` seconds, and how many of those starts reached the collector's archive.

    .venv/bin/python bench/agent/agent_bench.py --idle 1
Targets: idle <= 1 % CPU and <= 60 MB RSS; under load every start captured.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from bench.result_line import result  # noqa: E402
from tests.harness import Agent, Collector, wait_for  # noqa: E402


def make_tree(root: Path, files: int) -> None:
    per_dir = 100
    for i in range(files):
        d = root / f"d{i // per_dir:04d}"
        if i % per_dir == 0:
            d.mkdir(parents=True, exist_ok=True)
        (d / f"f{i:05d}.php").write_text(f"<?php echo {i}; ?>\n")


def switches(pid: int) -> dict[str, int]:
    """Context switches so far of every thread of ``pid``, by thread name (``comm``): a
    voluntary switch is the thread going to sleep, i.e. once per wakeup."""
    counts: dict[str, int] = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            name = Path(f"/proc/{pid}/task/{tid}/comm").read_text().strip()
            status = Path(f"/proc/{pid}/task/{tid}/status").read_text()
        except OSError:
            continue
        n = sum(int(line.split()[1]) for line in status.splitlines()
                if line.startswith(("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches")))
        counts[f"{name}[{tid}]"] = n
    return counts


def thread_names(pid: int, py_spy: str | None) -> dict[str, str]:
    """Thread id -> the Python thread's name, from ``py-spy dump`` when it is installed
    (CPython 3.11 does not give its threads an OS name: they are all ``python``)."""
    if not py_spy:
        return {}
    try:
        out = subprocess.run([py_spy, "dump", "--pid", str(pid)], capture_output=True,
                             text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return {}
    names = {}
    for line in out.splitlines():
        if line.startswith("Thread "):
            parts = line.split()
            tid = parts[1]
            names[str(int(tid, 16) if tid.startswith("0x") else tid)] = line.split('"')[1] \
                if '"' in line else tid
    return names


def sample(proc: psutil.Process, seconds: float, every: float = 5.0) -> tuple[list[float],
                                                                             list[int]]:
    cpu: list[float] = []
    rss: list[int] = []
    proc.cpu_percent(None)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        time.sleep(min(every, max(0.1, deadline - time.monotonic())))
        cpu.append(proc.cpu_percent(None))
        rss.append(proc.memory_info().rss)
    return cpu, rss


def wakeup_cost(seconds: float = 10.0) -> float:
    """CPU microseconds per wakeup of an idle Python thread on this machine, now.

    An idle agent is threads waiting with timeouts; what a wakeup costs varies a lot
    between machines (and over time in a VM): the idle CPU figure means little without it.
    """
    code = ("import threading, time\n"
            "stop = threading.Event()\n"
            "def loop():\n"
            "    while not stop.wait(0.1): pass\n"
            "ts = [threading.Thread(target=loop) for _ in range(10)]\n"
            "[t.start() for t in ts]\n"
            "c = time.process_time()\n"
            f"time.sleep({seconds})\n"
            "print(time.process_time() - c)\n"
            "stop.set()\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    return float(out) / (seconds * 100) * 1e6   # 10 threads x 10 wakeups/s


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--idle", "--minutes", type=float, default=5.0,
                        help="idle minutes (default 5)")
    parser.add_argument("--load", type=float, default=30.0, help="load seconds (default 30)")
    parser.add_argument("--rate", type=int, default=50, help="process starts per second")
    parser.add_argument("--files", type=int, default=20_000)
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    parser.add_argument("--py-spy", default=shutil.which("py-spy"),
                        help="py-spy, to name the threads (default: the one on PATH)")
    parser.add_argument("--sensors", default="fim,process,network,auth,inventory",
                        help="sensors to run (default: all that an idle host has)")
    args = parser.parse_args()

    print(f"this machine now: {wakeup_cost():.0f} us of CPU per idle thread wakeup "
          f"(10 threads waking 10 times a second)")
    work = Path(tempfile.mkdtemp(prefix="sisguard-bench-"))
    try:
        tree = work / "www"
        t0 = time.monotonic()
        make_tree(tree, args.files)
        print(f"tree: {args.files} files in {time.monotonic() - t0:.1f}s")
        collector = Collector(work / "collector")
        collector.start()
        cfg = work / "agent.yml"
        cfg.write_text(f"sensor:\n  fim:\n    paths: ['{tree}']\n")
        agent = Agent(work / "agent", collector,
                      ["--sensors", args.sensors, "--config", str(cfg)])
        agent.start()
        assert agent.proc is not None and agent.proc.popen is not None
        proc = psutil.Process(agent.proc.popen.pid)
        # let start-up work (FIM baseline, inventory's first run) finish before "idle"
        time.sleep(20)
        print(f"agent up; start-up RSS {proc.memory_info().rss / 2**20:.1f} MiB; "
              f"idle sampling {args.idle:g} min")
        def process_events() -> int:
            return sum(1 for e in collector.events()
                       if e.get("event", {}).get("dataset") == "sisguard.process")

        before = process_events()
        woke = switches(proc.pid)
        cpu_before = proc.cpu_times()
        cpu, rss = sample(proc, args.idle * 60)
        cpu_after = proc.cpu_times()
        woke_after = switches(proc.pid)
        seconds = args.idle * 60
        names = thread_names(proc.pid, args.py_spy)

        def named(key: str) -> str:
            _comm, tid = key.rstrip("]").split("[")
            return f"{names[tid]}[{tid}]" if tid in names else key

        per_thread = sorted(((woke_after[t] - woke.get(t, 0)) / seconds, named(t))
                            for t in woke_after)
        total = sum(n for n, _ in per_thread)
        used = (cpu_after.user + cpu_after.system - cpu_before.user - cpu_before.system)
        print(f"IDLE  {len(woke_after)} threads, {total:.1f} wakeups/s in all: "
              + ", ".join(f"{t} {n:.2f}/s" for n, t in reversed(per_thread)))
        print(f"IDLE  load average {' '.join(f'{x:.2f}' for x in os.getloadavg())} "
              f"({os.cpu_count()} cores)")
        print(f"IDLE  mean CPU {100 * used / seconds:.2f} % of one core over "
              f"{seconds:.0f} s (user+system time of the agent process)")
        background = (process_events() - before) / (args.idle * 60)
        print(f"IDLE  median CPU {statistics.median(cpu):.2f} % of one core "
              f"(max {max(cpu):.2f}), median RSS {statistics.median(rss) / 2**20:.1f} MiB "
              f"(max {max(rss) / 2**20:.1f}); other processes on the host made "
              f"{background:.1f} process events/s meanwhile (an idle host: ~0)")
        result("idle.cpu", statistics.median(cpu), "%", better="lower", target="1",
               label="agent idle CPU (median, % of a core)")
        result("idle.rss", statistics.median(rss) / 2**20, "MiB", better="lower", target="60",
               label="agent idle RSS (median)")
        result("idle.wakeups", total, "wakeups/s", better="lower",
               label="agent idle wakeups (all threads)")

        if args.load <= 0 or "process" not in args.sensors.split(","):
            agent.proc.stop()
            if collector.proc:
                collector.proc.stop()
            return 0
        true = shutil.which("true") or "/bin/true"
        pids: list[int] = []
        children: list[subprocess.Popen[bytes]] = []
        proc.cpu_percent(None)
        load_cpu: list[float] = []
        load_rss: list[int] = []
        start = time.monotonic()
        n = int(args.load * args.rate)
        next_sample = start + 1.0
        for i in range(n):
            due = start + i / args.rate
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            p = subprocess.Popen([true])
            pids.append(p.pid)
            children.append(p)
            for c in children[:]:
                if c.poll() is not None:
                    children.remove(c)
            if time.monotonic() >= next_sample:
                load_cpu.append(proc.cpu_percent(None))
                load_rss.append(proc.memory_info().rss)
                next_sample += 1.0
        for c in children:
            c.wait()
        elapsed = time.monotonic() - start
        wanted = set(pids)

        def captured() -> set[int]:
            return {e["process"]["pid"] for e in collector.events()
                    if e.get("event", {}).get("dataset") == "sisguard.process"
                    and e["event"].get("action") == "exec"} & wanted

        with contextlib.suppress(AssertionError):
            wait_for(lambda: len(captured()) == len(wanted), timeout=60, interval=1.0)
        got = captured()
        described = sum(1 for e in collector.events()
                        if e.get("event", {}).get("action") == "exec"
                        and e["process"]["pid"] in wanted and e["process"].get("executable"))
        print(f"LOAD  {n} starts in {elapsed:.1f}s ({n / elapsed:.1f}/s): captured "
              f"{len(got)}/{n}, with executable {described}; median CPU "
              f"{statistics.median(load_cpu) if load_cpu else 0:.1f} %, "
              f"max RSS {max(load_rss, default=0) / 2**20:.1f} MiB")
        result("load.captured", 100 * len(got) / max(n, 1), "%", target="100",
               label=f"process starts captured at {args.rate}/s")
        if load_cpu:
            result("load.cpu", statistics.median(load_cpu), "%", better="lower",
                   label=f"agent CPU at {args.rate} starts/s (median, % of a core)")
        agent.proc.stop()
        if collector.proc:
            collector.proc.stop()
        return 0 if len(got) == n else 1
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
        else:
            print(f"kept {work}")


if __name__ == "__main__":
    os.umask(0o022)
    sys.exit(main())
