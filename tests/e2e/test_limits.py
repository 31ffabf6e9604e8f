"""Bad input: oversized batches and malformed events cost nothing else."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc

from tests.harness import Agent, Collector, cli, read_jsonl

AgentFactory = Callable[..., Agent]


def _creds(state: Path) -> grpc.ChannelCredentials:
    return grpc.ssl_channel_credentials(root_certificates=(state / "ca.crt").read_bytes(),
                                        private_key=(state / "agent.key").read_bytes(),
                                        certificate_chain=(state / "agent.crt").read_bytes())


def _doc(i: int, **extra: object) -> bytes:
    doc = {"@timestamp": "2026-11-29T10:00:00.000000Z",
           "event": {"kind": "event", "dataset": "sisguard.fim", "category": ["file"],
                     "type": ["creation"], "action": "created"},
           "file": {"path": f"/var/www/html/{i}.html"}, **extra}
    return json.dumps(doc).encode()


def _send(collector: Collector, state: Path, batches: list[list[tuple[int, bytes]]]
          ) -> tuple[list[object], grpc.RpcError | None]:
    from sisguard.v1 import sisguard_pb2 as pb
    from sisguard.v1 import sisguard_pb2_grpc as pb_grpc

    def requests() -> Iterator[pb.AgentMessage]:
        yield pb.AgentMessage(hello=pb.Hello(agent_version="test"))
        for n, batch in enumerate(batches, 1):
            yield pb.AgentMessage(batch=pb.EventBatch(batch_id=n, events=[
                pb.Envelope(seq=seq, dataset="sisguard.fim", document=doc)
                for seq, doc in batch]))

    acks: list[object] = []
    with grpc.secure_channel(collector.address, _creds(state),
                             options=[("grpc.max_send_message_length", 64 << 20)]) as ch:
        call = pb_grpc.IngestStub(ch).Stream(requests(), timeout=20)
        try:
            for message in call:
                if message.WhichOneof("kind") == "ack":
                    acks.append(message.ack)
                    if len(acks) == len(batches):
                        call.cancel()
                        break
        except grpc.RpcError as e:
            return acks, e
    return acks, None


def test_malformed_events_are_counted_and_the_rest_of_the_batch_is_kept(
        collector: Collector, agent_factory: AgentFactory) -> None:
    agent = agent_factory(collector, start=False)
    agent.enroll()
    batch = [(1, _doc(1)), (2, b"{not json"), (3, _doc(3)),
             (4, json.dumps({"event": {"kind": "event"}}).encode()), (5, _doc(5))]
    acks, error = _send(collector, agent.state_dir, [batch, [(6, _doc(6))]])
    assert error is None, error
    first, second = acks
    assert first.accepted == 3  # type: ignore[attr-defined]
    rejected = {r.seq: r.reason for r in first.rejected}  # type: ignore[attr-defined]
    assert set(rejected) == {2, 4}
    assert "not valid JSON" in rejected[2]
    assert "@timestamp" in rejected[4]
    assert second.accepted == 1  # type: ignore[attr-defined]  # the stream stayed up
    seqs = sorted(e["event"]["sequence"] for e in collector.events())
    assert seqs == [1, 3, 5, 6]
    dead = list(read_jsonl(collector.data_dir / "archive", "deadletter-"))
    assert sorted(d["sequence"] for d in dead) == [2, 4]
    assert all(d["agent"]["id"] == agent.agent_id and d["reason"] for d in dead)


def test_batch_over_the_event_limit_is_refused_with_a_clear_error(
        collector_factory: Callable[..., Collector], agent_factory: AgentFactory,
        tmp_path: Path) -> None:
    config = tmp_path / "collector.yml"
    config.write_text("limits:\n  max_batch_events: 10\n")
    collector = collector_factory("--config", str(config))
    agent = agent_factory(collector, start=False)
    agent.enroll()
    acks, error = _send(collector, agent.state_dir, [[(i, _doc(i)) for i in range(1, 12)]])
    assert error is not None and error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "over the limit of 10" in (error.details() or "")
    # nothing of the refused batch was stored; the collector still serves
    assert collector.events() == []
    acks, error = _send(collector, agent.state_dir, [[(1, _doc(1))]])
    assert error is None and len(acks) == 1


def test_message_over_the_size_limit_is_refused_and_collector_keeps_serving(
        collector: Collector, agent_factory: AgentFactory) -> None:
    agent = agent_factory(collector, start=False)
    agent.enroll()
    big = _doc(1, message="x" * (5 * 1024 * 1024))  # over the default 4 MiB
    acks, error = _send(collector, agent.state_dir, [[(1, big)]])
    assert error is not None and error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    acks, error = _send(collector, agent.state_dir, [[(2, _doc(2))]])
    assert error is None and acks[0].accepted == 1  # type: ignore[attr-defined]


def test_collector_refuses_to_start_on_a_taken_port(tmp_path: Path) -> None:
    """Two processes on one port (gRPC's SO_REUSEPORT) would share agents silently."""
    import socket

    from tests.harness import free_port_pair

    collector = Collector(tmp_path / "c", port=free_port_pair())
    collector.init()
    with socket.socket() as squatter:
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        squatter.bind(("127.0.0.1", collector.port))
        squatter.listen()
        result = cli("collector", "run", "--data-dir", str(collector.data_dir), "--listen",
                     collector.address, check=False, timeout=30)
    assert result.returncode != 0
    assert f"cannot listen on {collector.address} (events port): it is taken" in result.stderr
    assert "--listen" in result.stderr
