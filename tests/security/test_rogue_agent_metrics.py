"""A rogue enrolled agent cannot blow up or falsify the collector's metrics.

A raw gRPC client with a real agent's key sends 300 documents that claim to be alerts,
each naming a rule of its own, and a heartbeat claiming 2^64-1 spool drops, then drops
its streams without a goodbye. Alerts are counted from what the collector made, never
from an agent's document: no forged rule id reaches ``sisguard_alerts_total``; the
fields it forged are counted as stripped; its heartbeat moves its own series only; its
streams are given back.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator

import grpc

from sisguard.v1 import sisguard_pb2 as pb
from sisguard.v1 import sisguard_pb2_grpc as pb_grpc
from tests.e2e.test_metrics import scrape, value
from tests.harness import Agent, Collector, free_port, wait_for
from tests.security.test_rogue_agent_ingest import _creds

AgentFactory = Callable[..., Agent]


def _forged(seq: int) -> bytes:
    return json.dumps({
        "@timestamp": "2026-11-29T10:00:00.000000Z",
        "event": {"kind": "alert", "dataset": "sisguard.auth", "action": "ssh_login"},
        "rule": {"id": f"forged-{seq}", "name": "Forged"},
        "sisguard": {"alert": {"level": f"level-{seq}"}}}).encode()


def test_rogue_agent_cannot_forge_alert_series_or_leak_streams(
        collector_factory: Callable[..., Collector], agent_factory: AgentFactory) -> None:
    port = free_port()
    collector = collector_factory("--metrics", f"127.0.0.1:{port}")
    rogue = agent_factory(collector, name="rogue", start=False)
    rogue.enroll()
    honest = agent_factory(collector, name="honest", start=False)
    honest.enroll()

    def messages() -> Iterator[pb.AgentMessage]:
        yield pb.AgentMessage(hello=pb.Hello(agent_version="rogue"))
        yield pb.AgentMessage(heartbeat=pb.Heartbeat(spool_dropped=2**64 - 1,
                                                     interval_seconds=30))
        yield pb.AgentMessage(batch=pb.EventBatch(batch_id=1, events=[
            pb.Envelope(seq=1000 + i, dataset="sisguard.auth", document=_forged(i))
            for i in range(300)]))

    with grpc.secure_channel(collector.address, _creds(rogue.state_dir)) as channel:
        call = pb_grpc.IngestStub(channel).Stream(messages(), timeout=30)
        for message in call:
            if message.WhichOneof("kind") == "ack":
                assert message.ack.accepted == 300
                call.cancel()   # no goodbye
                break

    def settled() -> dict[tuple[str, tuple[tuple[str, str], ...]], float] | None:
        now = scrape(port)
        return now if value(now, "sisguard_streams") == 0 and value(
            now, "sisguard_events_received_total") >= 300 else None

    after = wait_for(settled, timeout=15, message="the rogue's stream given back")
    forged = [labels for (name, labels) in after
              if name == "sisguard_alerts_total" and "forged" in str(labels)]
    assert forged == [], "alert series from an agent's document"
    for field in ("rule", "event.kind", "sisguard.alert"):
        assert value(after, "sisguard_stripped_fields_total", field=field) == 300, field
    assert value(after, "sisguard_agents_connected") == 0
    assert value(after, "sisguard_agent_spool_dropped", agent_id=rogue.agent_id) == float(2**64 - 1)
    assert value(after, "sisguard_agent_spool_dropped", agent_id=honest.agent_id) == 0
    series = [labels for (name, labels) in after if name == "sisguard_agent_spool_dropped"]
    assert len(series) == 2, "per-agent series for the agents the store knows, no more"
