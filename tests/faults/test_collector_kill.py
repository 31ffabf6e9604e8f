"""Fault 1: the collector is SIGKILLed mid-stream five times in a row."""

from __future__ import annotations

import signal
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.faults.matrix import (
    Marker,
    Stream,
    archive_docs,
    check,
    collector_config,
    es_docs,
    log_lines,
    settle,
)
from tests.harness import Agent, Collector, wait_for

pytestmark = pytest.mark.service
KILLS = 5


def _growing(collector: Collector, by: int = 25) -> Callable[[], bool]:
    before = len(archive_docs(collector))
    return lambda: len(archive_docs(collector)) >= before + by


def test_collector_sigkilled_five_times_mid_stream_loses_and_duplicates_nothing(
        collector_factory: Callable[..., Collector], agent_factory: Callable[..., Agent],
        es_prefix: tuple[str, str], tmp_path: Path) -> None:
    url, prefix = es_prefix
    config = collector_config(tmp_path / "collector.yml", es_url=url, prefix=prefix)
    collector = collector_factory("--config", str(config))
    marker = Marker(tmp_path / "www", "kill")
    agent = agent_factory(collector, "--sensors", "fim", "--watch", str(marker.root))
    assert agent.proc is not None and collector.proc is not None
    with Stream(marker):
        for _ in range(KILLS):
            # events are flowing into this collector: kill it while they do
            wait_for(_growing(collector), timeout=30,
                     message=f"events reaching the collector\n{collector.proc.tail()}")
            collector.proc.kill(signal.SIGKILL)
            collector.start()
    marker.write(20)   # and a few after the last restart
    produced = marker.paths
    tallies = settle(agent, {"archive": lambda: archive_docs(collector),
                             "elasticsearch": lambda: es_docs(url, prefix)}, produced)
    check(f"collector SIGKILL x{KILLS}", tallies, produced)
    # the agent saw every kill: the fault really happened, mid-stream
    failures = log_lines(agent.proc.since(0), "stream to collector failed")
    assert len(failures) >= KILLS, agent.proc.tail()
