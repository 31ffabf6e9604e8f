"""Fault 5: the file system of the agent's spool fills up while the collector is away.

The agent's state directory is a small tmpfs of the test's own. Events that find no room
must be counted and reported (a ``spool_dropped`` event), never lost in silence, and the
agent must carry on once the collector is back and the spool drains.
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.faults.matrix import (
    Marker,
    archive_docs,
    check,
    collector_config,
    es_docs,
    settle,
    tmpfs,
)
from tests.harness import Agent, Collector, wait_for

pytestmark = [pytest.mark.service]
FS_SIZE = "3m"     # the agent's whole state directory: keys, FIM baseline, spool
FILES = 4000       # about 1 KiB of spool each (long names): far more than fits


def test_spool_file_system_full_drops_are_counted_and_reported(
        collector_factory: Callable[..., Collector], agent_factory: Callable[..., Agent],
        es_prefix: tuple[str, str], tmp_path: Path) -> None:
    url, prefix = es_prefix
    config = collector_config(tmp_path / "collector.yml", es_url=url, prefix=prefix)
    collector = collector_factory("--config", str(config))
    with tmpfs(tmp_path / "agent", FS_SIZE):
        marker = Marker(tmp_path / "www", "full", pad=180)
        agent = agent_factory(collector, "--sensors", "fim", "--watch", str(marker.root))
        assert agent.proc is not None and collector.proc is not None
        try:
            collector.proc.kill(signal.SIGKILL)
            marker.write(FILES)
            wait_for(lambda: '"spool write failed' in agent.proc.since(0) if agent.proc
                     else False, timeout=60, message=f"the spool full\n{agent.proc.tail()}")
            collector.start()
            marker.write(20)
            produced = marker.paths
            tallies = settle(agent, {"archive": lambda: archive_docs(collector),
                                     "elasticsearch": lambda: es_docs(url, prefix)}, produced)
            check("agent spool file system full", tallies, produced, drops_allowed=True)
        finally:
            agent.proc.kill()
