"""collector/store.py: organizations of tokens and agents, and databases made before
organization ids."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from collector.store import OrganizationConflict, Store
from collector.tenants import Organization, TenancyError

# the tables as sisguard 0.1 made them (no organization_id, no cert_expires)
OLD_SCHEMA = """
CREATE TABLE tokens (hash TEXT PRIMARY KEY, created REAL NOT NULL, expires REAL NOT NULL,
    uses_left INTEGER NOT NULL, organization TEXT NOT NULL);
CREATE TABLE agents (agent_id TEXT PRIMARY KEY, hostname TEXT NOT NULL,
    organization TEXT NOT NULL, version TEXT NOT NULL, os TEXT NOT NULL DEFAULT '',
    serial TEXT NOT NULL, enrolled REAL NOT NULL, revoked REAL,
    address TEXT NOT NULL DEFAULT '', last_seen REAL, heartbeat TEXT);
"""


def test_a_database_made_before_organization_ids_gets_ids_derived_from_the_names(
        tmp_path: Path) -> None:
    path = tmp_path / "collector.db"
    db = sqlite3.connect(path)
    db.executescript(OLD_SCHEMA)
    db.execute("INSERT INTO tokens VALUES ('h1', 1, 9e9, 1, 'Sở TT&TT')")
    db.execute("INSERT INTO agents VALUES ('a1', 'web1', 'Sở TT&TT', '0.1', '', 's', 1,"
               " NULL, '', NULL, NULL)")
    db.execute("INSERT INTO agents VALUES ('a2', 'web2', 'default', '0.1', '', 's', 1,"
               " NULL, '', NULL, NULL)")
    db.commit()
    db.close()
    store = Store(path)
    agent = store.agent("a1")
    assert agent is not None and agent.organization_id == "so-tt-tt"
    assert [t.organization for t in store.tokens()] == [Organization("so-tt-tt", "Sở TT&TT")]
    assert store.organizations() == [Organization("default", "default"),
                                     Organization("so-tt-tt", "Sở TT&TT")]
    assert [a.agent_id for a in store.agents(organization_id="default")] == ["a2"]
    # the derived id is now that name's: a new token with the name gets it
    store.create_token(ttl=60, uses=1, organization="Sở TT&TT")
    assert {t.organization.id for t in store.tokens(organization_id="so-tt-tt")} == {"so-tt-tt"}
    store.close()
    assert Store(path).agent("a1") == agent   # opening again changes nothing


def test_a_token_carries_its_organization_to_the_agent(tmp_path: Path) -> None:
    store = Store(tmp_path / "collector.db")
    token = store.create_token(ttl=60, uses=2, organization="Sở Y tế", organization_id="syt")
    org = store.redeem_token(token)
    assert org == Organization("syt", "Sở Y tế")
    agent_id = store.add_agent(hostname="web1", organization=org.name, organization_id=org.id,
                               version="", os="", serial="")
    other = store.add_agent(hostname="web2", organization="default", version="", os="",
                            serial="")
    assert [a.agent_id for a in store.agents(organization_id="syt")] == [agent_id]
    assert [a.agent_id for a in store.agents(organization_id="default")] == [other]
    assert store.agents(organization_id="nobody") == []
    [listed] = store.tokens(organization_id="syt")
    assert listed.uses_left == 1 and len(listed.hash_prefix) == 12
    assert listed.hash_prefix not in token and store.tokens(organization_id="default") == []


def test_an_id_names_one_organization_by_one_name(tmp_path: Path) -> None:
    store = Store(tmp_path / "collector.db")
    store.create_token(ttl=60, uses=1, organization="Sở Y tế", organization_id="syt")
    with pytest.raises(OrganizationConflict, match="'syt'"):
        store.create_token(ttl=60, uses=1, organization="Sở Tư pháp", organization_id="syt")
    with pytest.raises(OrganizationConflict, match="'Sở Y tế'"):
        store.create_token(ttl=60, uses=1, organization="Sở Y tế", organization_id="so-y-te")
    with pytest.raises(TenancyError):
        store.create_token(ttl=60, uses=1, organization="x", organization_id="Bad Id")
    store.create_token(ttl=60, uses=1, organization="Sở Y tế", organization_id="syt")
    assert len(store.tokens()) == 2


def _sync(store: Store) -> int:
    return int(store._db.execute("PRAGMA synchronous").fetchone()[0])


def test_heartbeats_are_soft_writes_and_durable_ones_stay_full(tmp_path: Path) -> None:
    """What a stream tells again is written without an fsync; the rest stays FULL."""
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
