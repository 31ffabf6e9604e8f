"""collector/tenants.py: organization ids, the alias/role bodies and the sync plan; the
organization stamped on events is the collector's, never the agent's."""

from __future__ import annotations

import json
from functools import partial
from types import SimpleNamespace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from collector.outputs.es_indices import IndexNames
from collector.pipeline import AgentIdentity, Pipeline, Validate
from collector.tenants import (
    ORG_ID,
    Cluster,
    Organization,
    TenancyError,
    alias_actions,
    check_org_id,
    component_body,
    derived_id,
    plan,
    role_body,
)
from sisguard.v1 import sisguard_pb2 as pb

A = Organization("so-y-te", "Sở Y tế")
B = Organization("so-tt-tt", "Sở TT&TT")


@pytest.mark.parametrize(("name", "expected"), [
    ("Sở Thông tin và Truyền thông", "so-thong-tin-va-truyen-thong"),
    ("ĐÀ NẴNG", "da-nang"),
    ("Sở TT&TT", "so-tt-tt"),
    ("default", "default"),
    ("  -- x --  ", "x"),
    ("a" * 80, "a" * 64),
])
def test_an_id_is_derived_from_the_name_folded_to_a_slug(name: str, expected: str) -> None:
    assert derived_id(name) == expected


def test_a_name_without_letters_or_digits_gets_a_hashed_id() -> None:
    assert derived_id("???") != derived_id("!!!")
    assert derived_id("???").startswith("org-") and ORG_ID.fullmatch(derived_id("???"))


@given(st.text(max_size=200))
def test_every_name_derives_a_valid_id_the_same_every_time(name: str) -> None:
    assert ORG_ID.fullmatch(derived_id(name)) and derived_id(name) == derived_id(name)


@pytest.mark.parametrize("bad", ["", "A", "a_b", "a b", "a/../b", "x" * 65, "sở"])
def test_an_invalid_id_is_refused_naming_it(bad: str) -> None:
    with pytest.raises(TenancyError, match="--org-id"):
        check_org_id(bad, where="--org-id")
    with pytest.raises(TenancyError):
        Organization.of("name", bad or "A")


@pytest.mark.parametrize("bad", ["", "   ", "a\nb", "x\x00", "x" * 65])
def test_an_invalid_name_is_refused(bad: str) -> None:
    with pytest.raises(TenancyError, match="organization name"):
        Organization.of(bad)


def test_the_aliases_filter_on_the_organization_id() -> None:
    body = component_body("sg", "events", [A, B])
    assert body["template"]["aliases"] == {
        "sg-events-org-so-y-te": {"filter": {"term": {"organization.id": "so-y-te"}}},
        "sg-events-org-so-tt-tt": {"filter": {"term": {"organization.id": "so-tt-tt"}}},
    }
    assert alias_actions("sg", "alerts", [A], []) == []
    assert alias_actions("sg", "alerts", [A], ["sg-alerts-2026.11.29"]) == [
        {"add": {"indices": ["sg-alerts-2026.11.29"], "alias": "sg-alerts-org-so-y-te",
                 "filter": {"term": {"organization.id": "so-y-te"}}}}]


def test_a_role_reads_the_two_aliases_and_the_space_only() -> None:
    body = role_body("sg", A, document_level=False)
    assert body["indices"] == [{"names": ["sg-events-org-so-y-te", "sg-alerts-org-so-y-te"],
                                "privileges": ["read", "view_index_metadata"]}]
    assert body["applications"] == [{"application": "kibana-.kibana",
                                     "privileges": ["space_read"],
                                     "resources": ["space:sg-org-so-y-te"]}]
    assert "cluster" not in body and "run_as" not in body
    dls = role_body("sg", A, document_level=True)["indices"][0]
    assert dls["query"] == {"bool": {"filter": [{"term": {"organization.id": "so-y-te"}}]}}


def _never(**kwargs: object) -> None:
    raise AssertionError("a plan calls nothing until its steps are run")


def _client() -> SimpleNamespace:
    never = SimpleNamespace(put_component_template=_never, update_aliases=_never,
                            put_role=_never)
    return SimpleNamespace(cluster=never, indices=never, security=never)


@pytest.mark.parametrize(("security", "roles", "note"), [
    (True, 2, "no document-level security"),
    (False, 0, "security is disabled"),
    (None, 0, "does not say"),
])
def test_the_plan_makes_roles_only_where_security_is_on(
        security: bool | None, roles: int, note: str) -> None:
    cluster = Cluster({"events": ["sg-events-2026.11.29"], "alerts": []}, security, False)
    steps, notes = plan(_client(), IndexNames("sg"), [A, B], cluster, shards=1, replicas=0)
    whats = [s.what for s in steps]
    assert sum(w.startswith("role ") for w in whats) == roles
    assert sum(w.startswith("component template ") for w in whats) == 2
    assert [w for w in whats if w.startswith("aliases ")] == [   # no alerts index yet
        "aliases sg-events-org-<id> (2) on 1 existing sg-events-* indices"]
    assert len(notes) == 1 and note in notes[0]


def test_the_organization_on_an_event_is_the_collectors_not_the_agents() -> None:
    """A rogue agent names another agency in its events: overwritten."""
    agent = AgentIdentity("a1", "web1", "Sở Y tế", "1.0", "so-y-te")
    doc = {"@timestamp": "2026-11-29T10:00:00Z", "organization": {"id": "so-tt-tt",
                                                                  "name": "Sở TT&TT",
                                                                  "extra": "x"},
           "event": {"kind": "event", "dataset": "sisguard.auth"}}
    outcome = Pipeline([Validate()]).process_batch(
        agent, [pb.Envelope(seq=1, document=json.dumps(doc).encode())])
    [record] = outcome.records
    assert record.document["organization"] == {"id": "so-y-te", "name": "Sở Y tế"}


def test_an_identity_without_an_id_has_the_derived_one() -> None:
    assert AgentIdentity("a1", "web1", "Sở TT&TT", "1.0").organization_id == "so-tt-tt"


def test_a_sync_of_one_organization_keeps_every_organizations_aliases_in_the_template() -> None:
    cluster = Cluster({"events": ["sg-events-2026.11.29"], "alerts": []}, True, False)
    steps, _ = plan(_client(), IndexNames("sg"), [A, B], cluster, shards=1, replicas=0,
                    selected=[A])
    whats = [s.what for s in steps]
    assert [w for w in whats if w.startswith("role ")] == [
        "role sg-org-so-y-te: read sg-events-org-so-y-te, sg-alerts-org-so-y-te"]
    assert "aliases sg-events-org-<id> (1) on 1 existing sg-events-* indices" in whats
    [component] = [s for s in steps if s.what.startswith("component template sg-events")]
    assert isinstance(component.run, partial)
    assert set(component.run.keywords["template"]["aliases"]) == {
        "sg-events-org-so-y-te", "sg-events-org-so-tt-tt"}
