"""Fault 5: the file system of the agent's spool fills up while the collector is away.

The agent's state directory is a small tmpfs of the test's own, filled up by a ballast
file (whatever fills a disk in real life). Events that find no room must be counted and
reported (a ``spool_dropped`` event), never lost in silence; what was spooled before must
still be shipped and deleted once the collector is back, the disk still full (a spool
that cannot delete must not stall the shipper); and once room is made (the operator
removes the ballast) the drops are reported and new events flow.
"""

from __future__ import annotations

import errno
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
    tally,
    tmpfs,
)
from tests.harness import Agent, Collector, wait_for

pytestmark = [pytest.mark.service]
FS_SIZE = "8m"     # the agent's whole state directory: keys, FIM baseline, spool
SPOOLED = 200      # marked files spooled before the disk is full
UNROOMED = 300     # marked files written while it is full


def _fill(path: Path) -> int:
    """Write ``path`` until the file system is full; the bytes written."""
    written = 0
    with open(path, "wb", buffering=0) as f:
        chunk = b"\0" * 65536
        while True:
            try:
                written += f.write(chunk)
            except OSError as e:
                if e.errno != errno.ENOSPC:
                    raise
                chunk = chunk[: len(chunk) // 2]
                if len(chunk) < 512:
                    return written


def test_spool_file_system_full_drops_are_counted_and_reported(
        collector_factory: Callable[..., Collector], agent_factory: Callable[..., Agent],
        es_prefix: tuple[str, str], tmp_path: Path) -> None:
    url, prefix = es_prefix
    config = collector_config(tmp_path / "collector.yml", es_url=url, prefix=prefix)
    collector = collector_factory("--config", str(config))
    with tmpfs(tmp_path / "agent", FS_SIZE) as state:
        # the agent's log outside the full file system: it must tell what happened
        (state / "agent.log").symlink_to(tmp_path / "agent.log")
        marker = Marker(tmp_path / "www", "full")
        agent = agent_factory(collector, "--sensors", "fim", "--watch", str(marker.root))
        assert agent.proc is not None and collector.proc is not None
        try:
            collector.proc.kill(signal.SIGKILL)
            before = set(marker.write(SPOOLED))
            wait_for(lambda: spool_events(agent) >= SPOOLED, timeout=30,
                     message=f"{SPOOLED} events spooled\n{agent.proc.tail()}")
            _fill(state / "ballast")
            marker.write(UNROOMED)
            wait_for(lambda: '"spool file system full' in agent.proc.since(0) if agent.proc
                     else False, timeout=60, message=f"the spool full\n{agent.proc.tail()}")
            collector.start()
            # the disk still full: what was spooled is shipped all the same
            wait_for(lambda: before <= tally(archive_docs(collector), before).stored,
                     timeout=60, message=f"the spooled events shipped\n{agent.proc.tail()}")
            (state / "ballast").unlink()   # the operator makes room
            after = set(marker.write(20))  # room again: these must all arrive
            produced = marker.paths
            tallies = settle(agent, {"archive": lambda: archive_docs(collector),
                                     "elasticsearch": lambda: es_docs(url, prefix)}, produced)
            rows = check("agent spool file system full", tallies, produced, drops_allowed=True)
            assert all(row.dropped > 0 for row in rows)   # the fault happened, and was said
            for t in tallies.values():
                assert after <= t.stored, sorted(after - t.stored)[:3]
        finally:
            agent.proc.kill()
