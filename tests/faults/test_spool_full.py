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
    spool_events,
    tmpfs,
)
from tests.harness import Agent, Collector, wait_for

pytestmark = [pytest.mark.service]
FS_SIZE = "4m"     # the agent's whole state directory: keys, FIM baseline, spool
FILES = 4000       # about 1 KiB of spool each (long names): far more than fits


def test_spool_file_system_full_drops_are_counted_and_reported(
        collector_factory: Callable[..., Collector], agent_factory: Callable[..., Agent],
        es_prefix: tuple[str, str], tmp_path: Path) -> None:
    url, prefix = es_prefix
    config = collector_config(tmp_path / "collector.yml", es_url=url, prefix=prefix)
    collector = collector_factory("--config", str(config))
    with tmpfs(tmp_path / "agent", FS_SIZE) as state:
        # the agent's log outside the full file system: it must tell what happened
        (state / "agent.log").symlink_to(tmp_path / "agent.log")
        marker = Marker(tmp_path / "www", "full", pad=180)
        agent = agent_factory(collector, "--sensors", "fim", "--watch", str(marker.root))
        assert agent.proc is not None and collector.proc is not None
        try:
            collector.proc.kill(signal.SIGKILL)
            marker.write(FILES)
            wait_for(lambda: '"spool file system full' in agent.proc.since(0) if agent.proc
                     else False, timeout=60, message=f"the spool full\n{agent.proc.tail()}")
            collector.start()
            wait_for(lambda: spool_events(agent) == 0, timeout=60,
                     message=f"the spool drained\n{agent.proc.tail()}")
            after = set(marker.write(20))   # room again: these must all arrive
            produced = marker.paths
            tallies = settle(agent, {"archive": lambda: archive_docs(collector),
                                     "elasticsearch": lambda: es_docs(url, prefix)}, produced)
            rows = check("agent spool file system full", tallies, produced, drops_allowed=True)
            assert all(row.dropped > 0 for row in rows)   # the fault happened, and was said
            for t in tallies.values():
                assert after <= t.stored, sorted(after - t.stored)[:3]
        finally:
            agent.proc.kill()
