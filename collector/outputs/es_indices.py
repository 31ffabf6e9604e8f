"""Index names, composable templates and retention for the Elasticsearch output.

Daily indices ``PREFIX-events-YYYY.MM.DD``, ``PREFIX-alerts-YYYY.MM.DD`` (UTC, the day
the collector took the document in: ``event.ingested``, days.py; never ``@timestamp``,
which the agent chooses) and ``PREFIX-deadletter-YYYY.MM.DD``. Plain composable
templates and index deletion: no ILM, data streams or paid features, so this works on
every Elasticsearch 7.10+/8/9 and OpenSearch.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from typing import Any

from elasticsearch import Elasticsearch

from collector.outputs.days import ingestion_day
from collector.outputs.es_fields import properties
from collector.records import Kind

TEMPLATE_VERSION = 2   # 2: composed of the tenants component templates
TENANT_KINDS = ("events", "alerts")


@dataclass(frozen=True)
class IndexNames:
    prefix: str

    def daily(self, kind: Kind, document: dict[str, Any]) -> str:
        return f"{self.prefix}-{kind.value}-{ingestion_day(document).replace('-', '.')}"

    def deadletter(self, now: dt.datetime) -> str:
        return f"{self.prefix}-deadletter-{now.strftime('%Y.%m.%d')}"

    def patterns(self) -> dict[str, str]:
        return {kind: f"{self.prefix}-{kind}-*" for kind in ("events", "alerts", "deadletter")}

    def day_of(self, index: str) -> dt.date | None:
        match = re.fullmatch(re.escape(self.prefix)
                             + r"-(?:events|alerts|deadletter)-(\d{4})\.(\d{2})\.(\d{2})", index)
        if not match:
            return None
        try:
            return dt.date(int(match[1]), int(match[2]), int(match[3]))
        except ValueError:
            return None


def tenants_component(prefix: str, kind: str) -> str | None:
    """The component template holding the per-organization aliases of ``kind``'s indices
    (``sisguard-collector tenants sync`` fills it: collector/tenants.py); None for none."""
    return f"{prefix}-{kind}-tenants" if kind in TENANT_KINDS else None


def template_body(pattern: str, *, shards: int, replicas: int,
                  composed_of: tuple[str, ...] = ()) -> dict[str, Any]:
    return {
        "index_patterns": [pattern],
        "composed_of": list(composed_of),
        "priority": 200,
        "version": TEMPLATE_VERSION,
        "_meta": {"managed_by": "sisguard"},
        "template": {
            "settings": {
                "number_of_shards": shards,
                "number_of_replicas": replicas,
                "refresh_interval": "1s",
                "mapping": {"total_fields": {"limit": 2000}},
            },
            "mappings": {
                # unexpected fields stay in _source, unindexed: they can't break a mapping
                "dynamic": False,
                "date_detection": False,
                "properties": properties(),
            },
        },
    }


def install_templates(client: Elasticsearch, names: IndexNames, *, shards: int,
                      replicas: int) -> None:
    """Idempotent: PUT each composable template (same body, same result). Once tenants
    sync has made a kind's tenants component template, that kind's template is composed
    of it (so a new daily index gets the organizations' aliases); never made here."""
    for kind, pattern in names.patterns().items():
        component = tenants_component(names.prefix, kind)
        composed = component is not None and bool(
            client.cluster.exists_component_template(name=component))
        client.indices.put_index_template(
            name=f"{names.prefix}-{kind}",
            **template_body(pattern, shards=shards, replicas=replicas,
                            composed_of=(component,) if component and composed else ()),
        )


def remove_expired(client: Elasticsearch, names: IndexNames, retention_days: int, *,
                   today: dt.date) -> list[str]:
    """Delete daily indices dated more than ``retention_days`` before today."""
    oldest_kept = today - dt.timedelta(days=retention_days)
    found = client.indices.get(index=f"{names.prefix}-*", expand_wildcards="open,closed",
                               allow_no_indices=True, ignore_unavailable=True)
    expired = sorted(index for index in found
                     if (day := names.day_of(index)) is not None and day < oldest_kept)
    for index in expired:
        client.indices.delete(index=index, ignore_unavailable=True)
    return expired
