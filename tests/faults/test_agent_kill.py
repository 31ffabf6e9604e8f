"""Fault 4: the agent is SIGKILLed holding unacked events, and again mid-stream."""

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
    settle,
    spool_events,
)
from tests.harness import Agent, Collector, wait_for

pytestmark = pytest.mark.service
UNACKED = 150


def test_agent_sigkilled_with_unacked_events_loses_and_duplicates_nothing(
        collector_factory: Callable[..., Collector], agent_factory: Callable[..., Agent],
        es_prefix: tuple[str, str], tmp_path: Path) -> None:
    url, prefix = es_prefix
    config = collector_config(tmp_path / "collector.yml", es_url=url, prefix=prefix)
    collector = collector_factory("--config", str(config))
    marker = Marker(tmp_path / "www", "agentkill")
    agent = agent_factory(collector, "--sensors", "fim", "--watch", str(marker.root))
    assert agent.proc is not None and collector.proc is not None
    # 1. nothing can be acked: the collector is down; the events wait in the spool
    collector.proc.kill(signal.SIGKILL)
    marker.write(UNACKED)
    wait_for(lambda: spool_events(agent) >= UNACKED, timeout=30,
             message=f"{UNACKED} events spooled, unacked\n{agent.proc.tail()}")
    agent.proc.kill(signal.SIGKILL)
    marker.write(30)   # written while no agent runs: the startup scan must report them
    collector.start()
    agent.start()
    # 2. killed again while events stream in and out
    with Stream(marker, every=0.01):
        before = len(archive_docs(collector))
        wait_for(lambda: len(archive_docs(collector)) >= before + UNACKED + 50, timeout=60,
                 message=f"the spool draining\n{agent.proc.tail()}")
        agent.proc.kill(signal.SIGKILL)
    marker.write(30)
    agent.start()
    marker.write(20)
    produced = marker.paths
    tallies = settle(agent, {"archive": lambda: archive_docs(collector),
                             "elasticsearch": lambda: es_docs(url, prefix)}, produced)
    check("agent SIGKILL with unacked events", tallies, produced)
