"""Fault 7: failover between two collectors of one CA, there and back, mid-stream."""

from __future__ import annotations

import signal
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.faults.matrix import (
    Marker,
    Stream,
    apart,
    archive_docs,
    check,
    collector_config,
    es_docs,
    log_lines,
    overlap,
    settle,
    tally,
)
from tests.harness import Agent, Collector, cli, wait_for

pytestmark = pytest.mark.service


def _grows(collector: Collector, by: int = 25) -> Callable[[], bool]:
    before = len(archive_docs(collector))
    return lambda: len(archive_docs(collector)) >= before + by


def test_failover_between_two_collectors_loses_and_duplicates_nothing(
        collector_factory: Callable[..., Collector], agent_factory: Callable[..., Agent],
        es_prefix: tuple[str, str], tmp_path: Path) -> None:
    url, prefix = es_prefix
    config = collector_config(tmp_path / "collector.yml", es_url=url, prefix=prefix)
    first = collector_factory("--config", str(config), name="first")
    second = Collector(tmp_path / "second", extra=["--config", str(config)])
    cli("collector", "init", "--data-dir", str(second.data_dir), "--listen", second.address,
        "--ca-from", str(first.data_dir / "pki"))   # one CA: one pin for the agents
    second.fingerprint = first.fingerprint
    try:
        _there_and_back(first, second, agent_factory, url, prefix, tmp_path)
    finally:
        if second.proc is not None:
            second.proc.kill()


def _there_and_back(first: Collector, second: Collector,
                    agent_factory: Callable[..., Agent], url: str, prefix: str,
                    tmp_path: Path) -> None:
    second.start()
    marker = Marker(tmp_path / "www", "failover")
    agent = agent_factory(first, "--sensors", "fim", "--watch", str(marker.root),
                          "--collector", first.address, "--collector", second.address)
    assert agent.proc is not None and first.proc is not None and second.proc is not None
    with Stream(marker):
        wait_for(_grows(first), timeout=30, message="events at the first collector")
        first.proc.kill(signal.SIGKILL)
        wait_for(_grows(second), timeout=60,
                 message=f"events at the second collector\n{agent.proc.tail()}")
        first.start()
        second.proc.kill(signal.SIGKILL)
        wait_for(_grows(first), timeout=60,
                 message=f"events back at the first collector\n{agent.proc.tail()}")
    marker.write(20)
    produced = marker.paths
    # wait on what the two archives hold together; then count each on its own
    tallies = settle(agent, {"archives": lambda: archive_docs(first, second),
                             "elasticsearch": lambda: es_docs(url, prefix)}, produced)
    each = apart(tally(archive_docs(first), produced), tally(archive_docs(second), produced))
    check("failover between two collectors",
          {"each archive": each, "elasticsearch": tallies["elasticsearch"]}, produced)
    print(f"fault matrix | failover: {overlap(archive_docs(first), archive_docs(second))} "
          "events are in both archives (stored by one, acked by the other)")
    assert len(log_lines(agent.proc.since(0), "connected to collector")) >= 3
