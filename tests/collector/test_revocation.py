"""Revocations converge across collectors through the places they share."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from collector.crl import Revocations, read_crl, sign_crl
from collector.pki import CertificateAuthority
from collector.revocation import CrlFile, RevocationWatcher
from collector.store import Store


@pytest.fixture(scope="module")
def ca() -> CertificateAuthority:
    return CertificateAuthority.create()


def _watcher(ca: CertificateAuthority, tmp_path: Path, name: str,
             shared: Path) -> RevocationWatcher:
    store = Store(tmp_path / name / "collector.db")
    return RevocationWatcher(ca, store, [CrlFile(shared)], interval=0.1)


def test_a_revoke_on_one_collector_reaches_the_other_through_the_file(
        ca: CertificateAuthority, tmp_path: Path) -> None:
    shared = tmp_path / "shared" / "crl.pem"
    one, two = (_watcher(ca, tmp_path, n, shared) for n in ("one", "two"))
    changes: list[Revocations] = []
    two.on_change = changes.append
    assert not two.refresh()
    assert not shared.exists()            # nothing revoked: nothing published
    agent_id = str(uuid.uuid4())
    assert one.store.revoke(agent_id) is False   # never enrolled there: still revoked
    one.refresh()
    assert agent_id in read_crl(shared.read_bytes(), ca.cert, source="t").revocations.agent_ids
    assert two.refresh().agent_ids == {agent_id}
    assert changes and changes[-1].agent_ids == {agent_id}
    assert two.store.revocations()[1] == [agent_id]   # kept: survives a restart offline


def test_two_collectors_revoking_at_once_converge_on_the_union(
        ca: CertificateAuthority, tmp_path: Path) -> None:
    shared = tmp_path / "crl.pem"
    one, two = (_watcher(ca, tmp_path, n, shared) for n in ("one", "two"))
    one.store.revoke_serial("a1")
    two.store.revoke_serial("b2")
    one.refresh()
    two.refresh()     # reads one's list, merges, and publishes the union over it
    one.refresh()
    want = Revocations(serials=frozenset({0xA1, 0xB2}))
    assert one.current == two.current == want
    signed = read_crl(shared.read_bytes(), ca.cert, source="t")
    assert signed.revocations == want and signed.number == 2


def test_an_older_or_forged_list_takes_nothing_back(
        ca: CertificateAuthority, tmp_path: Path) -> None:
    shared = tmp_path / "crl.pem"
    one = _watcher(ca, tmp_path, "one", shared)
    one.store.revoke_serial("c3")
    one.refresh()
    older = sign_crl(ca, Revocations(), number=1)           # a genuine, older list
    shared.write_bytes(older)
    assert one.refresh().serials == {0xC3}
    assert read_crl(shared.read_bytes(), ca.cert, source="t").revocations.serials == {0xC3}
    forged = sign_crl(CertificateAuthority.create(), Revocations(), number=50)
    shared.write_bytes(forged)
    assert one.refresh().serials == {0xC3}
    assert one.refused_lists == 1
    # republished over the forgery, and a forged list read twice counts twice
    assert read_crl(shared.read_bytes(), ca.cert, source="t").revocations.serials == {0xC3}


def test_an_unreadable_place_is_retried_not_fatal(
        ca: CertificateAuthority, tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    one = _watcher(ca, tmp_path, "one", blocker / "crl.pem")   # parent is a file
    one.store.revoke_serial("d4")
    assert one.refresh().serials == {0xD4}    # in force here even though unpublished
