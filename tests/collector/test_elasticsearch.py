"""collector/outputs/elasticsearch.py: templates put again after an outage; dead letters."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from elasticsearch import Elasticsearch

from collector.config import ElasticsearchConfig
from collector.outputs import elasticsearch as es_output
from collector.outputs.base import OutputUnavailable
from collector.outputs.elasticsearch import ElasticsearchOutput
from collector.records import Kind, Outcome, Record
from common.yamlconf import Duration
from tests.search import SearchNode, drop_prefix, engine_urls, need_engine, searchable_count

pytestmark = pytest.mark.service


def record(seq: int) -> Record:
    doc = {"@timestamp": "2026-11-29T10:00:00Z", "source": {"ip": "10.0.0.1"},
           "agent": {"id": "a"},
           "event": {"kind": "event", "id": f"a-{seq}", "sequence": seq,
                     "dataset": "sisguard.auth",
                     # the daily index is the ingestion day's (never the agent's clock)
                     "ingested": "2026-11-29T10:00:01Z"}}
    return Record(Kind.EVENT, f"a-{seq}", doc, agent_id="a", seq=seq)


def explicit_mapping(es: Elasticsearch, index: str) -> bool:
    """The index got our template (dynamic: false, source.ip an ip), not dynamic mapping."""
    mapping: dict[str, Any] = es.indices.get_mapping(index=index)[index]["mappings"]
    ip = mapping["properties"]["source"]["properties"]["ip"]["type"]
    return str(mapping.get("dynamic")) == "false" and ip == "ip"


@pytest.fixture(params=engine_urls(), ids=lambda url: url.rsplit(":", 1)[-1])
def engine(request: pytest.FixtureRequest) -> str:
    url = str(request.param)
    if not url:
        need_engine("SISGUARD_TEST_ES_URLS / SISGUARD_TEST_ES_URL is not set")
    return url


@pytest.fixture
def prefix(engine: str) -> Iterator[str]:
    name = f"t{uuid.uuid4().hex[:10]}"
    yield name
    with Elasticsearch(engine, request_timeout=30) as es:
        drop_prefix(es, name)


def test_templates_deleted_behind_its_back_are_put_again(
        engine: str, prefix: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(es_output, "TEMPLATE_CHECK_EVERY", 0.0)
    output = ElasticsearchOutput(ElasticsearchConfig(url=(engine,), index_prefix=prefix))
    es = Elasticsearch(engine, request_timeout=30)
    try:
        output.connect()
        assert output.publish([record(1)]).outcomes == [Outcome.STORED]
        es.indices.delete(index=f"{prefix}-*")
        for kind in ("events", "alerts", "deadletter"):
            es.indices.delete_index_template(name=f"{prefix}-{kind}")
        assert output.publish([record(2)]).outcomes == [Outcome.STORED]
        assert explicit_mapping(es, f"{prefix}-events-2026.11.29")
    finally:
        output.close()
        es.close()


def test_dead_letters_of_the_pipeline_are_kept_once(engine: str, prefix: str) -> None:
    output = ElasticsearchOutput(ElasticsearchConfig(url=(engine,), index_prefix=prefix))
    es = Elasticsearch(engine, request_timeout=30)
    entry = {"agent": {"id": "a"}, "sequence": 7, "reason": "'file.size' is a long field",
             "dataset": "sisguard.fim", "ingested": "2026-11-29T10:00:00Z",
             "document": '{"file": {"size": "big"}}'}
    try:
        output.connect()
        output.dead_letter([entry])
        output.dead_letter([entry])   # the batch resent after a lost ack
        es.indices.refresh(index=f"{prefix}-deadletter-*")
        hits = es.search(index=f"{prefix}-deadletter-*")["hits"]["hits"]
        assert len(hits) == 1
        letter = hits[0]["_source"]
        assert letter["event"]["id"] == "a-7" and letter["agent"]["id"] == "a"
        assert "'file.size'" in letter["sisguard"]["deadletter"]["reason"]
        assert '"big"' in letter["sisguard"]["deadletter"]["document"]
    finally:
        output.close()
        es.close()


def test_after_an_outage_templates_are_put_before_indexing_again(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The cluster comes back empty (rebuilt, restored without templates): the events
    indexed after the outage still get the explicit mapping, not a dynamic one."""
    monkeypatch.setattr(es_output, "TEMPLATE_CHECK_EVERY", 3600.0)  # the outage is the cue
    first = SearchNode(tmp_path / "first")
    again = SearchNode(tmp_path / "again", port=first.port)
    output: ElasticsearchOutput | None = None
    try:
        url = first.start()
        output = ElasticsearchOutput(ElasticsearchConfig(url=(url,), index_prefix="outage",
                                                         request_timeout=Duration(5.0)))
        output.connect()
        assert output.publish([record(1)]).outcomes == [Outcome.STORED]
        first.stop()
        with pytest.raises(OutputUnavailable):
            output.publish([record(2)])
        assert not output.health()["ready"]
        again.start()   # same address, fresh data: no templates, no indices
        assert output.publish([record(2)]).outcomes == [Outcome.STORED]
        with Elasticsearch(url, request_timeout=30) as es:
            assert explicit_mapping(es, "outage-events-2026.11.29")
            assert es.indices.exists_index_template(name="outage-deadletter")
    finally:
        if output is not None:
            output.close()
        first.stop()
        again.stop()


def test_high_water_mark_is_the_agents_highest_stored_number(engine: str, prefix: str) -> None:
    """What a collector that never saw the agent takes as its mark (collector/sequence.py)."""
    output = ElasticsearchOutput(ElasticsearchConfig(url=(engine,), index_prefix=prefix))
    try:
        output.connect()
        assert output.high_water_mark("a") == 0            # no index yet
        other = Record(Kind.EVENT, "b-9", {**record(9).document, "agent": {"id": "b"}},
                       agent_id="b", seq=9)
        big = 2**62 + 1                                     # exact: not through a double
        output.publish([record(1), record(big), record(3), other])
        with Elasticsearch(engine, request_timeout=30) as es:
            es.indices.refresh(index=f"{prefix}-events-*")
        assert output.high_water_mark("a") == big
        assert output.high_water_mark("b") == 9
        assert output.high_water_mark("nobody") == 0
    finally:
        output.close()


def test_bulk_requests_hold_at_most_bulk_max_docs(engine: str, prefix: str) -> None:
    output = ElasticsearchOutput(ElasticsearchConfig(url=(engine,), index_prefix=prefix,
                                                     bulk_max_docs=2))
    es = Elasticsearch(engine, request_timeout=30)
    try:
        output.connect()
        result = output.publish([record(seq) for seq in range(1, 6)])
        assert result.outcomes == [Outcome.STORED] * 5
        assert output.stats["requests"] == 3, "5 documents, 2 a request"
        again = output.publish([record(seq) for seq in range(4, 8)])
        assert again.outcomes == [Outcome.DUPLICATE] * 2 + [Outcome.STORED] * 2
        assert output.stats["requests"] == 5
        assert searchable_count(es, f"{prefix}-events-*") == 7
    finally:
        output.close()
        es.close()
