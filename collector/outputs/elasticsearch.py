"""The Elasticsearch output: daily indices, explicit templates, exactly-once bulk.

Per-item handling follows libbeat's ``applyItemStatus``: 2xx stored; 409 duplicate
(already there: counts as stored); 429 and 5xx retried with backoff; any other 4xx
(a document the mapping refuses) goes to ``PREFIX-deadletter-*`` with its reason;
a 413 for the whole request splits it in halves. When Elasticsearch cannot be reached
the batch raises ``OutputUnavailable``: nothing is acked, the agents keep their events.

After an outage (a connection error, a timeout or a 5xx) the index templates are put
again before the next document is indexed, as Beats load theirs on every connection: a
cluster that comes back without them (restored, rebuilt, or templates deleted) must not
map our documents dynamically. Events the pipeline rejected go to the same
``PREFIX-deadletter-*`` indices when the archive is off (``dead_letter``).
"""

from __future__ import annotations

import datetime as dt
import json
import threading
import time
from collections.abc import Sequence
from typing import Any

from elasticsearch import ApiError, Elasticsearch, TransportError

from collector.config import ElasticsearchConfig
from collector.decoding import MAX_DOCUMENT_BYTES
from collector.outputs.base import (
    Outcome,
    Output,
    OutputUnavailable,
    PublishResult,
    Record,
)
from collector.outputs.es_indices import IndexNames, install_templates, remove_expired
from collector.outputs.registry import OutputContext, register
from common.logs import get_logger

log = get_logger("sisguard.collector.elasticsearch")

RETRY_ROUNDS = 5          # per publish, for 429/5xx items, before giving the batch back
RETENTION_EVERY = 3600.0  # seconds
TEMPLATE_CHECK_EVERY = 30.0  # seconds


def connect_client(config: ElasticsearchConfig) -> Elasticsearch:
    kwargs: dict[str, Any] = {"request_timeout": config.request_timeout,
                              "retry_on_timeout": False, "max_retries": 0}
    if config.api_key:
        kwargs["api_key"] = config.api_key
    elif config.username:
        kwargs["basic_auth"] = (config.username, config.password or "")
    if config.ca:
        kwargs["ca_certs"] = str(config.ca)
    return Elasticsearch(list(config.url), **kwargs)


@register("elasticsearch", ElasticsearchConfig)
class ElasticsearchOutput(Output):
    name = "elasticsearch"
    counts_duplicates = True   # exact: 409 on create (collector/publisher.py)
    marks_local = False        # a search: asked once per agent the collector has no mark for

    def __init__(self, config: ElasticsearchConfig, client: Elasticsearch | None = None,
                 *, now: Any = None, name: str = "elasticsearch") -> None:
        self.name = name
        self.config = config
        self.client = client or connect_client(config)
        self.names = IndexNames(config.index_prefix)
        self._ready = False
        self._installed = False           # once: later installs are after an outage
        self._next_template_check = 0.0
        self._lock = threading.Lock()
        self._now = now or (lambda: dt.datetime.now(dt.UTC))
        self._next_retention = 0.0
        self.stats = {"stored": 0, "duplicates": 0, "dead_lettered": 0, "retries": 0,
                      "splits": 0, "unavailable": 0, "requests": 0}
        self.last_error = ""

    @classmethod
    def from_config(cls, name: str, config: ElasticsearchConfig, context: OutputContext
                    ) -> ElasticsearchOutput:
        return cls(config, name=name)

    # lifecycle
    def connect(self) -> None:
        try:
            self._ensure_ready()
        except OutputUnavailable as e:
            # not fatal: the collector serves, agents keep their events until it's back
            log.error("Elasticsearch not reachable at start; will retry", error=str(e))

    def close(self) -> None:
        self.client.close()

    def health(self) -> dict[str, Any]:
        return {**self.stats, "ready": self._ready, "last_error": self.last_error}

    def _ensure_ready(self) -> None:
        """Templates in place: put after an outage, and checked every half minute (a
        node restarted empty between two batches shows no error to notice)."""
        if self._ready and time.monotonic() < self._next_template_check:
            return
        with self._lock:
            if self._ready and time.monotonic() < self._next_template_check:
                return
            try:
                if not (self._ready and self._templates_present()):
                    install_templates(self.client, self.names, shards=self.config.shards,
                                      replicas=self.config.replicas)
                    log.info("index templates installed", prefix=self.config.index_prefix,
                             after_outage=self._installed)
            except (TransportError, ApiError) as e:
                self._ready = False
                self.last_error = str(e)
                raise OutputUnavailable(f"cannot install index templates: {e}") from e
            self._ready = self._installed = True
            self._next_template_check = time.monotonic() + TEMPLATE_CHECK_EVERY

    def _templates_present(self) -> bool:
        return all(bool(self.client.indices.exists_index_template(name=f"{self.names.prefix}-"
                                                                       f"{kind}"))
                   for kind in self.names.patterns())

    def _outage(self, error: Exception) -> None:
        """Unreachable: put the templates again before indexing after it is back."""
        self.last_error = str(error)
        self.stats["unavailable"] += 1
        if self._ready:
            log.warning("Elasticsearch unreachable; templates are put again once it is back",
                        error=str(error))
        self._ready = False

    def _retention(self) -> None:
        if time.monotonic() < self._next_retention:
            return
        self._next_retention = time.monotonic() + RETENTION_EVERY
        try:
            removed = remove_expired(self.client, self.names, self.config.retention_days,
                                     today=self._now().date())
        except (TransportError, ApiError) as e:
            log.warning("retention job failed; will retry", error=str(e))
            self._next_retention = time.monotonic() + 60
            return
        for index in removed:
            log.info("deleted expired index", index=index,
                     retention_days=self.config.retention_days)

    # publishing
    def publish(self, records: Sequence[Record]) -> PublishResult:
        self._ensure_ready()
        self._retention()
        result = PublishResult([Outcome.STORED] * len(records))
        pending = list(range(len(records)))
        delay = 0.25
        for _round in range(RETRY_ROUNDS):
            retry: list[int] = []
            dead: list[tuple[int, int, str]] = []
            step = max(1, self.config.bulk_max_docs)
            for start in range(0, len(pending), step):   # at most bulk_max_docs a request
                self.stats["requests"] += 1
                self._bulk(records, pending[start:start + step], result, retry, dead)
            if dead:
                self._dead_letter(records, dead, result)
            if not retry:
                return result
            self.stats["retries"] += len(retry)
            log.warning("Elasticsearch asked to retry", items=len(retry), retry_in=delay)
            time.sleep(delay)
            delay = min(delay * 2, 5.0)
            pending = retry
        self.stats["unavailable"] += 1
        raise OutputUnavailable(f"{len(pending)} documents still refused after "
                                f"{RETRY_ROUNDS} rounds (429/5xx)")

    def _bulk(self, records: Sequence[Record], indices: list[int], result: PublishResult,
              retry: list[int], dead: list[tuple[int, int, str]]) -> None:
        if not indices:
            return
        operations: list[Any] = []
        for i in indices:
            record = records[i]
            operations.append({"create": {"_index": self.names.daily(record.kind,
                                                                     record.document),
                                          "_id": record.doc_id}})
            operations.append(record.document)
        try:
            response = self.client.bulk(operations=operations, refresh=False)
        except ApiError as e:
            if e.status_code == 413 and len(indices) > 1:
                self.stats["splits"] += 1
                half = len(indices) // 2
                self._bulk(records, indices[:half], result, retry, dead)
                self._bulk(records, indices[half:], result, retry, dead)
                return
            if e.status_code >= 500:
                self._ready = False  # the cluster may come back as another one
            if e.status_code in (429,) or e.status_code >= 500:
                retry.extend(indices)
                return
            self.last_error = str(e)
            self.stats["unavailable"] += 1
            raise OutputUnavailable(f"bulk request refused: {e}") from e
        except TransportError as e:
            self._outage(e)
            raise OutputUnavailable(f"Elasticsearch unreachable: {e}") from e
        self.last_error = ""
        for i, item in zip(indices, response["items"], strict=True):
            status = int(item["create"]["status"])
            if 200 <= status < 300:
                result.outcomes[i] = Outcome.STORED
                self.stats["stored"] += 1
            elif status == 409:
                result.outcomes[i] = Outcome.DUPLICATE
                self.stats["duplicates"] += 1
            elif status == 429 or status >= 500:
                retry.append(i)
            else:
                error = item["create"].get("error", {})
                reason = f"{error.get('type', status)}: {error.get('reason', '')}"
                dead.append((i, status, reason))

    def _dead_letter(self, records: Sequence[Record], dead: list[tuple[int, int, str]],
                     result: PublishResult) -> None:
        operations: list[Any] = []
        now = self._now()
        for i, status, reason in dead:
            record = records[i]
            operations.append({"create": {"_index": self.names.deadletter(now),
                                          "_id": record.doc_id}})
            operations.append({
                "@timestamp": now.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
                "agent": {"id": record.agent_id} if record.agent_id else {},
                "event": {"kind": "pipeline_error", "id": record.doc_id},
                "sisguard": {"deadletter": {
                    "reason": reason, "status": status, "id": record.doc_id,
                    "index": self.names.daily(record.kind, record.document),
                    "document": json.dumps(record.document, ensure_ascii=False,
                                           default=str)[:1_000_000]}},
            })
            log.warning("document refused by the mapping, dead-lettered",
                        id=record.doc_id, reason=reason)
        response = self._bulk_dead_letters(operations)
        for (i, _, _), item in zip(dead, response["items"], strict=True):
            status = int(item["create"]["status"])
            if 200 <= status < 300 or status == 409:
                result.outcomes[i] = Outcome.DEAD_LETTERED
                result.reasons[i] = next(r for j, _, r in dead if j == i)
                self.stats["dead_lettered"] += 1
            else:
                raise OutputUnavailable(f"dead-letter index refused a document: {item}")

    def high_water_mark(self, agent_id: str) -> int:
        """The highest ``event.sequence`` stored for the agent, by any collector (0: none).
        Read from ``_source`` (a max aggregation is a double: inexact above 2^53)."""
        try:
            response = self.client.search(
                index=self.names.patterns()["events"], size=1, allow_no_indices=True,
                ignore_unavailable=True, query={"term": {"agent.id": agent_id}},
                sort=[{"event.sequence": {"order": "desc", "unmapped_type": "long"}}],
                source_includes=["event.sequence"])
        except (TransportError, ApiError) as e:
            raise OutputUnavailable(f"cannot read the agent's highest number: {e}") from e
        hits = response.get("hits", {}).get("hits", [])
        value = hits[0].get("_source", {}).get("event", {}).get("sequence") if hits else None
        return value if isinstance(value, int) and value > 0 else 0

    def dead_letter(self, entries: Sequence[dict[str, Any]]) -> None:
        """Keep events the pipeline rejected (``collector.pipeline``), with their reason."""
        if not entries:
            return
        self._ensure_ready()
        now = self._now()
        stamp = now.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        operations: list[Any] = []
        for entry in entries:
            agent_id = str(entry.get("agent", {}).get("id", ""))
            doc_id = f"{agent_id}-{entry.get('sequence', '')}"
            operations.append({"create": {"_index": self.names.deadletter(now),
                                          "_id": f"rejected-{doc_id}"}})
            operations.append({
                "@timestamp": stamp,
                "agent": {"id": agent_id} if agent_id else {},
                "event": {"kind": "pipeline_error", "id": doc_id,
                          "ingested": entry.get("ingested", stamp)},
                "sisguard": {"deadletter": {
                    "reason": entry.get("reason", ""), "status": 0, "id": doc_id,
                    "document": str(entry.get("document", ""))[:MAX_DOCUMENT_BYTES]}},
            })
        response = self._bulk_dead_letters(operations)
        for item in response["items"]:
            status = int(item["create"]["status"])
            if not (200 <= status < 300 or status == 409):
                raise OutputUnavailable(f"dead-letter index refused a document: {item}")
        self.stats["dead_lettered"] += len(entries)

    def _bulk_dead_letters(self, operations: list[Any]) -> Any:
        try:
            return self.client.bulk(operations=operations, refresh=False)
        except TransportError as e:
            self._outage(e)
            raise OutputUnavailable(f"cannot write dead letters: {e}") from e
        except ApiError as e:
            if e.status_code >= 500:
                self._ready = False
            raise OutputUnavailable(f"cannot write dead letters: {e}") from e
