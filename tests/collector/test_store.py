"""Store: what a stream tells again is written without an fsync; the rest stays FULL."""

from __future__ import annotations

from pathlib import Path

import pytest

from collector.store import Store


def _sync(store: Store) -> int:
    return int(store._db.execute("PRAGMA synchronous").fetchone()[0])


def test_heartbeats_are_soft_writes_and_durable_ones_stay_full(tmp_path: Path) -> None:
    store = Store(tmp_path / "agents.db")
    agent = store.add_agent(hostname="web1", organization="org", version="1", os="Linux",
                            serial="ab")
    assert _sync(store) == 2   # FULL
    store.seen(agent, address="ipv4:127.0.0.1:5", heartbeat={"spool_events": 3})
    store.set_certificate(agent, serial="ac", expires=2e9)
    assert _sync(store) == 2   # back to FULL for enrollment, tokens, revocation
    with pytest.raises(RuntimeError), store._tx(durable=False):
        raise RuntimeError("a failing soft write")
    assert _sync(store) == 2
    store.close()
    again = Store(tmp_path / "agents.db")
    record = again.agent(agent)
    assert record is not None and record.heartbeat == {"spool_events": 3}
    assert record.serial == "ac" and record.address == "ipv4:127.0.0.1:5"
    again.close()
