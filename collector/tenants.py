"""Organizations (tenants) and their own view of the cluster.

Every enrollment token names an organization: a display name and a stable id
(``[a-z0-9-]{1,64}``, given by the admin or derived from the name). The agent enrolled
with it carries both, in the store and in its certificate, and the collector stamps
``organization.id`` and ``organization.name`` on every event and alert it takes in
(never what the agent sent).

``sisguard-collector tenants sync`` gives each organization a view limited to its own
documents:

* filtered aliases ``PREFIX-events-org-<id>`` and ``PREFIX-alerts-org-<id>``
  (``organization.id`` is the id), on every existing daily index and, through the
  component templates ``PREFIX-events-tenants`` and ``PREFIX-alerts-tenants`` that the
  index templates are composed of, on every daily index made later;
* where the cluster has security enabled, a role ``PREFIX-org-<id>`` that may read only
  those two aliases (with document-level security too where the licence has it) and
  read its Kibana space;
* a Kibana space ``PREFIX-org-<id>`` holding the shipped data views, searches and
  dashboard, the data views pointing at the organization's aliases (tenants_sync.py).

Everything is idempotent (PUT the same bodies, add the same aliases); ``plan()`` says what
will be done before anything is, which is what ``--dry-run`` prints.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

from common.errors import SisguardError

ORG_ID = re.compile(r"[a-z0-9-]{1,64}")
MAX_NAME_CHARS = 64      # the certificate's O attribute holds at most 64 characters
KINDS = ("events", "alerts")
KIBANA_APPLICATION = "kibana-.kibana"
# Letters NFKD does not take apart into a base letter and marks
_FOLD = str.maketrans({"đ": "d", "Đ": "d", "ø": "o", "Ø": "o", "ł": "l", "Ł": "l",
                       "ß": "ss", "æ": "ae", "Æ": "ae", "œ": "oe", "Œ": "oe"})


class TenancyError(SisguardError):
    """An organization id or name is invalid, or a tenant cannot be set up."""


def check_org_id(value: str, *, where: str = "organization id") -> str:
    if not ORG_ID.fullmatch(value):
        raise TenancyError(f"{where} {value!r}: use 1 to 64 of a-z, 0-9 and '-'")
    return value


def check_org_name(value: str, *, where: str = "organization name") -> str:
    if not value.strip() or len(value) > MAX_NAME_CHARS:
        raise TenancyError(f"{where} {value!r}: give 1 to {MAX_NAME_CHARS} characters")
    if any(unicodedata.category(c)[0] == "C" for c in value):
        raise TenancyError(f"{where} {value!r}: control characters are not allowed")
    return value


def derived_id(name: str) -> str:
    """The id of an organization known only by its name (tokens, agents and certificates
    made before ids existed): the name folded to a-z, 0-9 and '-'. Deterministic, so that
    every collector derives the same id from the same certificate."""
    folded = unicodedata.normalize("NFKD", name.translate(_FOLD))
    ascii_only = "".join(c for c in folded if not unicodedata.combining(c)).lower()
    slug = re.sub(r"[^a-z0-9]+", "-", ascii_only).strip("-")[:64].strip("-")
    return slug or "org-" + hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()[:12]


@dataclass(frozen=True)
class Organization:
    id: str
    name: str

    @classmethod
    def of(cls, name: str, org_id: str | None = None) -> Organization:
        """A new organization (checked); without an id, the one derived from the name."""
        check_org_name(name)
        return cls(check_org_id(org_id) if org_id else derived_id(name), name)


# --------------------------------------------------------------------------- bodies

def alias_name(prefix: str, kind: str, org_id: str) -> str:
    return f"{prefix}-{kind}-org-{org_id}"


def role_name(prefix: str, org_id: str) -> str:
    return f"{prefix}-org-{org_id}"


def space_id(prefix: str, org_id: str) -> str:
    """The organization's Kibana space (ids are a-z, 0-9, '_' and '-')."""
    return re.sub(r"[^a-z0-9_-]", "-", f"{prefix}-org-{org_id}".lower())


def component_name(prefix: str, kind: str) -> str:
    return f"{prefix}-{kind}-tenants"


def alias_filter(org_id: str) -> dict[str, Any]:
    return {"term": {"organization.id": org_id}}


def component_body(prefix: str, kind: str, organizations: Iterable[Organization]) -> dict[str, Any]:
    """The component template that gives every new daily index of ``kind`` the aliases."""
    return {
        "template": {"aliases": {alias_name(prefix, kind, o.id): {"filter": alias_filter(o.id)}
                                 for o in organizations}},
        "_meta": {"managed_by": "sisguard", "what": "per-organization filtered aliases"},
    }


def alias_actions(prefix: str, kind: str, organizations: Iterable[Organization],
                  indices: Sequence[str]) -> list[dict[str, Any]]:
    """``POST _aliases`` actions putting the aliases on existing daily indices."""
    if not indices:
        return []
    return [{"add": {"indices": list(indices), "alias": alias_name(prefix, kind, o.id),
                     "filter": alias_filter(o.id)}} for o in organizations]


def role_body(prefix: str, org: Organization, *, document_level: bool) -> dict[str, Any]:
    """Read the organization's two aliases and its Kibana space, nothing else.

    A filtered alias filters searches; a document fetched by id through the alias is not
    filtered. Document-level security (a licensed feature) closes that: where the licence
    has it the role carries the same filter as a DLS query."""
    indices: dict[str, Any] = {
        "names": [alias_name(prefix, kind, org.id) for kind in KINDS],
        "privileges": ["read", "view_index_metadata"],
    }
    if document_level:
        indices["query"] = {"bool": {"filter": [alias_filter(org.id)]}}
    return {
        "indices": [indices],
        "applications": [{"application": KIBANA_APPLICATION, "privileges": ["space_read"],
                          "resources": [f"space:{space_id(prefix, org.id)}"]}],
        "metadata": {"managed_by": "sisguard", "organization_id": org.id,
                     "organization_name": org.name},
    }


# --------------------------------------------------------------------------- plan

@dataclass(frozen=True)
class Step:
    """One thing ``sync`` does: what it is, in a line, and the call that does it."""

    what: str
    run: Callable[[], object]


@dataclass(frozen=True)
class Cluster:
    """What sync needs to know of the cluster before it plans."""

    indices: dict[str, list[str]]     # kind -> existing daily indices
    security: bool | None             # None: the cluster does not say (OpenSearch, old)
    document_level: bool              # the licence has document-level security


def probe(client: Any, names: Any) -> Cluster:
    """Read-only: existing daily indices, whether security is on, the licence."""
    from elasticsearch import ApiError, TransportError

    indices: dict[str, list[str]] = {}
    for kind in KINDS:
        found = client.indices.get(index=f"{names.prefix}-{kind}-*", expand_wildcards="open",
                                   allow_no_indices=True, ignore_unavailable=True)
        indices[kind] = sorted(i for i in found if names.day_of(i) is not None)
    security: bool | None
    document_level = False
    try:
        features = client.xpack.info(categories=["features", "license"])
        flags = features.get("features", {}).get("security", {})
        security = bool(flags.get("available") and flags.get("enabled"))
        licence = str(features.get("license", {}).get("type", ""))
        document_level = security and licence in ("platinum", "enterprise", "trial")
    except (ApiError, TransportError):
        security = None
    return Cluster(indices, security, document_level)


def plan(client: Any, names: Any, organizations: Sequence[Organization], cluster: Cluster, *,
         shards: int, replicas: int,
         selected: Sequence[Organization] | None = None) -> tuple[list[Step], list[str]]:
    """The steps of a sync, and notes for the operator (what is skipped, and why).

    The component templates always hold every organization's aliases (a template is
    replaced whole); ``selected`` limits the rest (existing indices, roles)."""
    from collector.outputs.es_indices import install_templates

    prefix = names.prefix
    steps: list[Step] = []
    notes: list[str] = []
    everyone = organizations
    organizations = everyone if selected is None else selected
    for kind in KINDS:
        body = component_body(prefix, kind, everyone)
        steps.append(Step(
            f"component template {component_name(prefix, kind)}: "
            f"{len(everyone)} aliases for future {prefix}-{kind}-* indices",
            partial(client.cluster.put_component_template, name=component_name(prefix, kind),
                    **body)))
    steps.append(Step(f"index templates {prefix}-events, {prefix}-alerts, {prefix}-deadletter "
                      f"composed of the tenants component templates",
                      partial(install_templates, client, names, shards=shards,
                              replicas=replicas)))
    for kind in KINDS:
        actions = alias_actions(prefix, kind, organizations, cluster.indices[kind])
        if actions:
            steps.append(Step(
                f"aliases {prefix}-{kind}-org-<id> ({len(organizations)}) on "
                f"{len(cluster.indices[kind])} existing {prefix}-{kind}-* indices",
                partial(client.indices.update_aliases, actions=actions)))
    if cluster.security:
        if not cluster.document_level:
            notes.append("the licence has no document-level security: the roles read "
                         "through filtered aliases only (see docs/tenancy.md)")
        for org in organizations:
            role = role_name(prefix, org.id)
            body = role_body(prefix, org, document_level=cluster.document_level)
            steps.append(Step(f"role {role}: read {alias_name(prefix, 'events', org.id)}, "
                              f"{alias_name(prefix, 'alerts', org.id)}",
                              partial(client.security.put_role, name=role, **body)))
    elif cluster.security is False:
        notes.append("security is disabled on this cluster: no roles made (anyone who "
                     "reaches it reads everything; see docs/tenancy.md)")
    else:
        notes.append("the cluster does not say whether security is on (not Elasticsearch "
                     "with X-Pack?): no roles made")
    return steps, notes
