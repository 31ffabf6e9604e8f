"""A rogue enrolled agent (root on its host, holding its own key) sends what it likes.

A raw gRPC client built on the committed stubs, with the key and certificate of an agent
enrolled through the harness, plays it against a real collector: sequence number 0,
2^64-1 then normal numbers, a leap, a number gone backwards, a 100,000-deep document, a
lone surrogate (escaped, and raw in a UTF-16 document), wrong types for mapped fields,
fields only the collector writes. Each gives its documented outcome in the real store
(the JSONL archive, and Elasticsearch with the archive off) and the stream goes on:
later good events are stored.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from elasticsearch import Elasticsearch, helpers

from sisguard.v1 import sisguard_pb2 as pb
from sisguard.v1 import sisguard_pb2_grpc as pb_grpc
from tests.harness import Agent, Collector, read_jsonl, wait_for
from tests.search import engine_urls, need_engine, when_searchable

AgentFactory = Callable[..., Agent]
BASE = 10_000   # the rogue's first number: a collector that never saw it takes it as the mark


def _doc(seq: int, **extra: Any) -> bytes:
    doc: dict[str, Any] = {
        "@timestamp": "2026-11-29T10:00:00.000000Z",
        "event": {"kind": "event", "dataset": "sisguard.auth", "category": ["authentication"],
                  "type": ["start"], "action": "ssh_login", "outcome": "failure"},
        "user": {"name": f"rogue-{seq}"}, "source": {"ip": "10.1.2.3"}}
    doc.update(extra)
    return json.dumps(doc).encode()


@dataclass(frozen=True)
class Case:
    name: str
    batch: list[tuple[int, bytes]]
    refused: dict[int, str]          # seq -> a word the reason says


OWNED = json.loads(_doc(BASE + 9))
OWNED["event"]["kind"] = "alert"
OWNED.update(rule={"id": "forged", "name": "Forged"}, threat={"framework": "MITRE ATT&CK"},
             sisguard={"alert": {"level": "critical"}})

CASES = [
    Case("good", [(BASE + 1, _doc(BASE + 1)), (BASE + 2, _doc(BASE + 2)),
                  (BASE + 3, _doc(BASE + 3))], {}),
    Case("seq 0", [(0, _doc(0))], {0: "sequence number 0"}),
    Case("seq 2^64-1", [(2**64 - 1, _doc(1))], {2**64 - 1: "above 2^63-1"}),
    Case("normal after 2^64-1", [(BASE + 4, _doc(BASE + 4)), (BASE + 5, _doc(BASE + 5))], {}),
    Case("leap", [(10**15, _doc(2))], {10**15: "leaps"}),
    Case("backwards", [(1, _doc(3))], {1: "backwards"}),
    Case("deep JSON", [(BASE + 6, b'{"a":' * 100_000 + b"1" + b"}" * 100_000)],
         {BASE + 6: "deeper"}),
    Case("lone surrogate", [(BASE + 7, b'{"@timestamp": "2026-11-29T10:00:00Z", "event": '
                                       b'{"kind": "event", "dataset": "x"}, '
                                       b'"user": {"name": "\\ud800"}}')],
         {BASE + 7: "'user.name' is not valid Unicode"}),
    Case("wrong types", [(BASE + 8, _doc(BASE + 8, source={"ip": "x"})),
                         (BASE + 10, _doc(BASE + 10, file={"size": "big"})),
                         (BASE + 11, b'{"@timestamp": {}, "event": {"kind": "event"}}')],
         {BASE + 8: "'source.ip'", BASE + 10: "'file.size'", BASE + 11: "'@timestamp'"}),
    Case("owned fields", [(BASE + 9, json.dumps(OWNED).encode())], {}),
    Case("UTF-16 with a lone surrogate",
         [(BASE + 12, '{"@timestamp": "2026-11-29T10:00:00Z", "event": {"kind": "event", '
                      '"dataset": "x"}, "user": {"name": "\ud800"}}'.encode("utf-16-le",
                                                                              "surrogatepass"))],
         {BASE + 12: "not UTF-8"}),
    Case("good after all that", [(BASE + 13, _doc(BASE + 13))], {}),
]
STORED = {BASE + i for i in (1, 2, 3, 4, 5, 9, 13)}
REFUSED = {seq for case in CASES for seq in case.refused}


def _creds(state: Path) -> grpc.ChannelCredentials:
    return grpc.ssl_channel_credentials(root_certificates=(state / "ca.crt").read_bytes(),
                                        private_key=(state / "agent.key").read_bytes(),
                                        certificate_chain=(state / "agent.crt").read_bytes())


def play(collector: Collector, state: Path) -> list[pb.Ack]:
    """Send every case on one stream, one batch each; return the acks, in order."""
    def requests() -> Iterator[pb.AgentMessage]:
        yield pb.AgentMessage(hello=pb.Hello(agent_version="rogue"))
        for n, case in enumerate(CASES, 1):
            yield pb.AgentMessage(batch=pb.EventBatch(batch_id=n, events=[
                pb.Envelope(seq=seq, dataset="sisguard.auth", document=doc)
                for seq, doc in case.batch]))

    acks: list[pb.Ack] = []
    with grpc.secure_channel(collector.address, _creds(state),
                             options=[("grpc.max_send_message_length", 16 << 20)]) as ch:
        call = pb_grpc.IngestStub(ch).Stream(requests(), timeout=60)
        for message in call:
            if message.WhichOneof("kind") == "ack":
                acks.append(message.ack)
                if len(acks) == len(CASES):
                    call.cancel()
                    break
    return acks


def send(collector: Collector, state: Path, batch: list[tuple[int, bytes]]) -> pb.Ack:
    """One batch on a stream of its own; its Ack."""
    messages = iter([pb.AgentMessage(hello=pb.Hello(agent_version="rogue")),
                     pb.AgentMessage(batch=pb.EventBatch(batch_id=1, events=[
                         pb.Envelope(seq=seq, dataset="sisguard.auth", document=doc)
                         for seq, doc in batch]))])
    with grpc.secure_channel(collector.address, _creds(state)) as ch:
        call = pb_grpc.IngestStub(ch).Stream(messages, timeout=30)
        for message in call:
            if message.WhichOneof("kind") == "ack":
                call.cancel()
                ack: pb.Ack = message.ack
                return ack
    raise AssertionError("no Ack")


def check_acks(acks: list[pb.Ack]) -> None:
    assert len(acks) == len(CASES), "the stream must go on after every bad batch"
    for case, ack in zip(CASES, acks, strict=True):
        reasons = {r.seq: r.reason for r in ack.rejected}
        assert set(reasons) == set(case.refused), (case.name, reasons)
        for seq, word in case.refused.items():
            assert word in reasons[seq], (case.name, reasons[seq])
        assert ack.accepted == len(case.batch) - len(case.refused), (case.name, ack)
        assert ack.duplicates == 0, (case.name, "later events swallowed as duplicates")


def check_stored(events: list[dict[str, Any]], alerts: list[dict[str, Any]]) -> None:
    assert {e["event"]["sequence"] for e in events} == STORED
    owned = next(e for e in events if e["event"]["sequence"] == BASE + 9)
    assert owned["event"]["kind"] == "event"
    assert "rule" not in owned and "threat" not in owned and "alert" not in owned["sisguard"]
    assert owned["sisguard"]["stripped"] == ["event.kind", "rule", "sisguard.alert", "threat"]
    anomalies = [a for a in alerts if a["rule"]["id"] == "builtin-sequence-anomaly"]
    assert len(anomalies) == 1, "one alert per anomaly window, not one per refused batch"
    assert anomalies[0]["sisguard"]["sequence_anomaly"]["kinds"] == ["zero"]
    assert not [a for a in alerts if a["rule"]["id"] == "forged"]


def test_rogue_agent_against_the_archive(collector: Collector,
                                         agent_factory: AgentFactory) -> None:
    agent = agent_factory(collector, start=False)
    agent.enroll()
    check_acks(play(collector, agent.state_dir))
    archive = collector.data_dir / "archive"
    check_stored(collector.events(), collector.alerts())
    for case in (CASES[1], CASES[6]):   # resent after a lost ack: refused again, kept once
        again = send(collector, agent.state_dir, case.batch)
        assert [r.seq for r in again.rejected] == list(case.refused)
    dead = list(read_jsonl(archive, "deadletter-"))
    assert {d["sequence"] for d in dead} == REFUSED
    assert len(dead) == len(REFUSED), "each refused event dead-lettered once"
    by_seq = {d["sequence"]: d for d in dead}
    assert "leaps" in by_seq[10**15]["reason"] and "rogue" not in by_seq[10**15]["reason"]
    assert json.loads(by_seq[0]["document"])["user"]["name"] == "rogue-0"  # kept in full
    assert "\\ud800" in by_seq[BASE + 7]["document"]
    # the mark is the highest number taken, not 2^64-1 nor 10^15 (saved at shutdown)
    assert collector.proc is not None
    collector.proc.stop()
    marks = json.loads((collector.data_dir / "sequence.json").read_text())["marks"]
    assert marks[agent.agent_id][0] == BASE + 13


@pytest.fixture(params=engine_urls(), ids=lambda url: url.rsplit(":", 1)[-1])
def engine(request: pytest.FixtureRequest) -> Iterator[Elasticsearch]:
    url = str(request.param)
    if not url:
        need_engine("SISGUARD_TEST_ES_URLS / SISGUARD_TEST_ES_URL is not set")
    client = Elasticsearch(url, request_timeout=30)
    yield client
    client.close()


def _all(es: Elasticsearch, index: str) -> list[dict[str, Any]]:
    return when_searchable(es, index, lambda: [
        h["_source"] for h in helpers.scan(es, index=index, ignore_unavailable=True)])


@pytest.mark.service
def test_rogue_agent_against_elasticsearch_with_the_archive_off(
        engine: Elasticsearch, collector_factory: Callable[..., Collector],
        agent_factory: AgentFactory, tmp_path: Path) -> None:
    prefix = f"t{uuid.uuid4().hex[:10]}"
    url = engine.transport.node_pool.get().base_url
    config = tmp_path / "collector.yml"
    config.write_text(f"elasticsearch:\n  url: [{url}]\n  index_prefix: {prefix}\n"
                      "archive:\n  enabled: false\n")
    try:
        collector = collector_factory("--config", str(config))
        agent = agent_factory(collector, start=False)
        agent.enroll()
        check_acks(play(collector, agent.state_dir))
        assert not (collector.data_dir / "archive").exists()
        check_stored(_all(engine, f"{prefix}-events-*"), _all(engine, f"{prefix}-alerts-*"))
        dead = wait_for(lambda: _all(engine, f"{prefix}-deadletter-*"), timeout=10,
                        message="dead letters in Elasticsearch")
        letters = {d["event"]["id"]: d["sisguard"]["deadletter"] for d in dead}
        assert set(letters) == {f"{agent.agent_id}-{seq}" for seq in REFUSED}
        assert "'source.ip'" in letters[f"{agent.agent_id}-{BASE + 8}"]["reason"]
        assert "rogue-0" in letters[f"{agent.agent_id}-0"]["document"]
        # the collector loses its marks (a new node, a wiped data dir): Elasticsearch,
        # which every collector shares, still knows the agent's highest stored number
        assert collector.proc is not None
        collector.proc.stop()
        (collector.data_dir / "sequence.json").unlink()
        collector.start()
        ack = send(collector, agent.state_dir, [(5, _doc(5)), (BASE + 14, _doc(BASE + 14))])
        assert [(r.seq, "backwards" in r.reason) for r in ack.rejected] == [(5, True)]
        assert ack.accepted == 1
    finally:
        engine.indices.delete(index=f"{prefix}-*", ignore_unavailable=True,
                              allow_no_indices=True)
        for kind in ("events", "alerts", "deadletter"):
            engine.options(ignore_status=404).indices.delete_index_template(
                name=f"{prefix}-{kind}")


def test_the_honest_agent_after_its_key_was_used_loses_nothing_and_does_not_loop(
        collector: Collector, agent_factory: AgentFactory, tmp_path: Path) -> None:
    """Root on the host used the agent's key to set its mark far ahead on a collector
    that had never seen it; the real agent, back in charge, sends 1, 2, 3...: refused as
    backwards, each is kept as a dead letter with its document and acked as rejected, so
    its spool drains instead of resending forever; one anomaly alert says so."""
    www = tmp_path / "www"
    www.mkdir()
    agent = agent_factory(collector, "--sensors", "fim", "--watch", str(www), start=False)
    agent.enroll()
    ack = send(collector, agent.state_dir, [(10**6, _doc(10**6))])
    assert ack.accepted == 1 and not ack.rejected
    agent.start()
    (www / "index.php").write_text("<?php echo 1; ?>\n")
    archive = collector.data_dir / "archive"

    def kept() -> set[int]:
        return {d["sequence"] for d in read_jsonl(archive, "deadletter-")}

    wait_for(lambda: len(kept()) >= 2 and agent.spool().get("events") == 0, timeout=30,
             message="the agent's refused events kept as dead letters, its spool drained")
    letters = list(read_jsonl(archive, "deadletter-"))
    assert all("backwards" in d["reason"] for d in letters)
    assert any("index.php" in d["document"] for d in letters), "the file event is kept"
    assert len({d["sequence"] for d in letters}) == len(letters), "each one dead-lettered once"
    assert {e["event"]["sequence"] for e in collector.events()} == {10**6}
    anomalies = [a for a in collector.alerts() if a["rule"]["id"] == "builtin-sequence-anomaly"]
    assert len(anomalies) == 1 and anomalies[0]["sisguard"]["sequence_anomaly"]["kinds"] == [
        "backwards"]
