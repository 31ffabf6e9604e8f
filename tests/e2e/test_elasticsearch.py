"""Agent -> collector -> a real Elasticsearch: searchable, ECS-valid, exactly once."""

from __future__ import annotations

import datetime as dt
import signal
import socket
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from elasticsearch import Elasticsearch, helpers

from collector.config import ElasticsearchConfig
from collector.outputs.elasticsearch import ElasticsearchOutput
from collector.outputs.es_fields import ALL_FIELDS
from collector.outputs.es_indices import IndexNames, remove_expired
from collector.records import Kind, Outcome, Record
from tests.ecs import leaves, problems
from tests.harness import Agent, Collector, wait_for
from tests.search import SearchNode, engine_urls, need_engine, searchable_count

pytestmark = pytest.mark.service
AgentFactory = Callable[..., Agent]


@pytest.fixture(params=engine_urls(), ids=lambda url: url.rsplit(":", 1)[-1])
def engine(request: pytest.FixtureRequest) -> str:
    """Each test runs against every engine scripts/test started (ES 9 and ES 8)."""
    url = str(request.param)
    if not url:
        need_engine("SISGUARD_TEST_ES_URLS / SISGUARD_TEST_ES_URL is not set")
    return url


@pytest.fixture
def es(engine: str) -> Iterator[Elasticsearch]:
    client = Elasticsearch(engine, request_timeout=30)
    yield client
    client.close()


@pytest.fixture
def prefix(es: Elasticsearch) -> Iterator[str]:
    name = f"t{uuid.uuid4().hex[:10]}"
    yield name
    es.indices.delete(index=f"{name}-*", ignore_unavailable=True, allow_no_indices=True)
    for kind in ("events", "alerts", "deadletter"):
        es.options(ignore_status=404).indices.delete_index_template(name=f"{name}-{kind}")


def _collector_config(tmp_path: Path, url: str, prefix: str, *, archive: bool = False) -> Path:
    path = tmp_path / "collector.yml"
    path.write_text(f"elasticsearch:\n  url: [{url}]\n  index_prefix: {prefix}\n"
                    f"archive:\n  enabled: {'true' if archive else 'false'}\n")
    return path


def _write(root: Path, n: int, start: int = 0) -> None:
    for i in range(start, start + n):
        (root / f"p{i:05d}.html").write_text(f"<p>{i}</p>\n")


def unmapped(doc: dict[str, Any]) -> set[str]:
    """Fields of ``doc`` that the index template does not map."""
    def mapped(name: str) -> bool:
        if name in ALL_FIELDS:
            return True
        parts = name.split(".")
        return any(ALL_FIELDS.get(".".join(parts[:i])) in ("object", "stored")
                   for i in range(1, len(parts)))

    return {name for name, _ in leaves(doc) if not mapped(name)}


OUTAGE = 20.0   # seconds: longer than the collector's first backoffs


def test_file_events_are_searchable_and_valid_ecs(
        engine: str, es: Elasticsearch, prefix: str, collector_factory: Callable[..., Collector],
        agent_factory: AgentFactory, tmp_path: Path) -> None:
    collector = collector_factory("--config", _collector_config(tmp_path, engine, prefix)
                                  .as_posix())
    www = tmp_path / "www"
    www.mkdir()
    agent = agent_factory(collector, "--sensors", "fim,process,network,inventory",
                          "--watch", str(www))
    _write(www, 1000)
    subprocess.run(["/bin/sh", "-c", "sleep 0.1"], check=True)  # a process start and end
    listener = socket.create_server(("127.0.0.1", 0))           # a new listening port
    index = f"{prefix}-events-*"
    wait_for(lambda: searchable_count(es, index, {"term": {"event.action": "listen_opened"}}),
             timeout=20, message="the listener reported")
    listener.close()
    created = {"term": {"event.action": "created"}}
    wait_for(lambda: searchable_count(es, index, created) >= 1000, timeout=60, interval=0.5,
             message="1,000 created events indexed")
    assert searchable_count(es, index, created) == 1000
    assert searchable_count(es, index, {"term": {"file.path": str(www / "p00042.html")}}) == 1
    assert searchable_count(es, index, {"term": {"agent.id": agent.agent_id}}) >= 1000
    host = es.search(index=index, size=1)["hits"]["hits"][0]["_source"]["host"]["name"]
    assert searchable_count(es, index, {"term": {"host.name": host}}) >= 1000
    wait_for(lambda: searchable_count(es, index, {"term": {"event.dataset": "sisguard.inventory"}}),
             timeout=30, message="inventory documents indexed")
    docs = [h["_source"] for h in helpers.scan(es, index=index)]
    datasets = {d["event"]["dataset"] for d in docs}
    assert {"sisguard.fim", "sisguard.process", "sisguard.network", "sisguard.inventory",
            "sisguard.agent"} <= datasets
    invalid = {p for d in docs for p in problems(d)}
    assert invalid == set()
    assert {f for d in docs for f in unmapped(d)} == set(), "fields missing from the template"


def test_engine_down_for_60_s_then_back_loses_and_duplicates_nothing(
        collector_factory: Callable[..., Collector], agent_factory: AgentFactory,
        tmp_path: Path) -> None:
    node = SearchNode(tmp_path / "search")
    try:
        url = node.start()
        prefix = "outage"
        collector = collector_factory("--config",
                                      _collector_config(tmp_path, url, prefix).as_posix())
        www = tmp_path / "www"
        www.mkdir()
        agent = agent_factory(collector, "--sensors", "fim", "--watch", str(www))
        client = Elasticsearch(url, request_timeout=30)
        wait_for(lambda: searchable_count(client, f"{prefix}-events-*") >= 1, timeout=30,
                 message="the agent_started event indexed")
        node.stop()
        _write(www, 250)
        wait_for(lambda: agent.spool().get("last_seq", 0) >= 251, timeout=20,
                 message="events spooled during the outage")
        assert collector.proc is not None
        # the collector is stuck retrying a bulk for Elasticsearch: kill it there
        collector.proc.kill(signal.SIGKILL)
        collector.start()
        _write(www, 250, start=250)
        wait_for(lambda: agent.spool().get("last_seq", 0) >= 501, timeout=20,
                 message="500 events spooled")
        outage_started = dt.datetime.now()
        # the outage itself, by design (tests/faults/test_search_faults.py keeps one of 60 s)
        wait_for(lambda: (dt.datetime.now() - outage_started).total_seconds() >= OUTAGE
                 or not collector.proc or not collector.proc.alive(), timeout=OUTAGE + 10,
                 interval=1, message=f"a {OUTAGE:.0f} s outage")
        assert collector.proc and collector.proc.alive(), collector.proc and collector.proc.tail()
        assert agent.spool()["events"] >= 500, "events must stay in the spool, unacked"
        node.start()
        created = {"term": {"event.action": "created"}}
        wait_for(lambda: searchable_count(client, f"{prefix}-events-*", created) >= 500, timeout=90,
                 interval=1, message="all 500 events indexed after the outage")
        wait_for(lambda: agent.spool()["events"] == 0, timeout=30, message="spool drained")
        assert searchable_count(client, f"{prefix}-events-*", created) == 500
        hits = client.search(index=f"{prefix}-events-*", size=0, aggs={
            "dup": {"terms": {"field": "file.path", "min_doc_count": 2, "size": 10}}})
        assert hits["aggregations"]["dup"]["buckets"] == []
        client.close()
    finally:
        node.stop()


def test_document_refused_by_the_mapping_goes_to_dead_letter_and_rest_is_indexed(
        engine: str, es: Elasticsearch, prefix: str) -> None:
    output = ElasticsearchOutput(ElasticsearchConfig(url=(engine,), index_prefix=prefix))
    output.connect()

    def record(i: int, ip: str) -> Record:
        doc = {"@timestamp": "2026-11-29T10:00:00Z", "event": {"kind": "event",
               "id": f"a-{i}", "dataset": "sisguard.auth"}, "source": {"ip": ip}}
        return Record(Kind.EVENT, f"a-{i}", doc, agent_id="a", seq=i)

    records = [record(1, "10.0.0.1"), record(2, "not-an-ip"), record(3, "10.0.0.3")]
    result = output.publish(records)
    assert result.outcomes == [Outcome.STORED, Outcome.DEAD_LETTERED, Outcome.STORED]
    assert "source.ip" in result.reasons[1]
    assert searchable_count(es, f"{prefix}-events-*") == 2
    es.indices.refresh(index=f"{prefix}-deadletter-*")
    dead = es.search(index=f"{prefix}-deadletter-*")["hits"]["hits"]
    assert len(dead) == 1
    letter = dead[0]["_source"]["sisguard"]["deadletter"]
    assert letter["id"] == "a-2" and "source.ip" in letter["reason"]
    assert "not-an-ip" in letter["document"]
    # resent after a reconnect: nothing new anywhere
    again = output.publish(records)
    assert again.outcomes == [Outcome.DUPLICATE, Outcome.DEAD_LETTERED, Outcome.DUPLICATE]
    assert searchable_count(es, f"{prefix}-events-*") == 2
    assert searchable_count(es, f"{prefix}-deadletter-*") == 1
    output.close()


def test_retention_removes_only_indices_older_than_retention_days(
        es: Elasticsearch, prefix: str) -> None:
    today = dt.date(2026, 11, 29)
    names = IndexNames(prefix)
    days = {"old": today - dt.timedelta(days=91), "edge": today - dt.timedelta(days=90),
            "new": today}
    for day in days.values():
        for kind in ("events", "alerts"):
            es.indices.create(index=f"{prefix}-{kind}-{day:%Y.%m.%d}")
    es.indices.create(index=f"{prefix}-events-keepme")
    removed = remove_expired(es, names, 90, today=today)
    assert removed == sorted(f"{prefix}-{k}-{days['old']:%Y.%m.%d}" for k in ("alerts", "events"))
    left = set(es.indices.get(index=f"{prefix}-*"))
    assert f"{prefix}-events-{days['edge']:%Y.%m.%d}" in left
    assert f"{prefix}-events-keepme" in left and len(left) == 5


def test_templates_install_idempotently_with_explicit_mappings(
        engine: str, es: Elasticsearch, prefix: str) -> None:
    for _ in range(2):
        output = ElasticsearchOutput(ElasticsearchConfig(url=(engine,),
                                                         index_prefix=prefix))
        output.connect()
        output.close()
    template = es.indices.get_index_template(name=f"{prefix}-events")
    mappings = template["index_templates"][0]["index_template"]["template"]["mappings"]
    assert mappings["dynamic"] in (False, "false")
    assert mappings["properties"]["source"]["properties"]["ip"]["type"] == "ip"
