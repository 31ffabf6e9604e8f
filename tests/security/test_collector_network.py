"""The unauthenticated network client and the rogue agent against the collector's ports.

Real processes only: a collector and agents started by the harness, a slow-loris attacker
speaking raw HTTP/2 from its own loopback address, and a rogue agent that is a raw gRPC
client holding a real agent's key.
"""

from __future__ import annotations

import itertools
import json
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc

from sisguard.v1 import sisguard_pb2 as pb
from sisguard.v1 import sisguard_pb2_grpc as pb_grpc
from tests.harness import Agent, Collector, cli, wait_for
from tests.security.h2raw import SlowLoris

Factory = Callable[..., Collector]
AgentFactory = Callable[..., Agent]
REFUSED_LINE = '"msg": "enrollment attempts refused"'


def _config(tmp_path: Path, text: str) -> str:
    path = tmp_path / "collector-test.yml"
    path.write_text(text)
    return str(path)


def _health(collector: Collector) -> dict[str, Any]:
    try:
        return dict(json.loads((collector.data_dir / "health.json").read_text()))
    except (OSError, ValueError):
        return {}


def _log_lines(collector: Collector, needle: str) -> list[dict[str, Any]]:
    assert collector.proc is not None
    return [json.loads(line) for line in collector.proc.since(0).splitlines()
            if needle in line and line.startswith("{")]


def _fim_paths(collector: Collector, root: Path) -> set[str]:
    return {e["file"]["path"] for e in collector.events()
            if e.get("file", {}).get("path", "").startswith(str(root))}


def test_slow_loris_on_enrollment_stalls_neither_agents_nor_enrollment(
        collector_factory: Factory, agent_factory: AgentFactory, tmp_path: Path) -> None:
    collector = collector_factory("--config", _config(tmp_path, "enrollment:\n  deadline: 2s\n"))
    www = tmp_path / "www"
    www.mkdir()
    agent = agent_factory(collector, "--sensors", "fim", "--watch", str(www), start=False)
    agent.enroll()
    # 528 Enroll calls from 127.0.0.2 that send their headers and never the request
    attacker = SlowLoris("127.0.0.1", collector.port + 1, "127.0.0.2")
    attacker.start()
    try:
        assert attacker.opened >= 520
        # calls over the per-address budget are refused at once, not queued
        wait_for(lambda: attacker.closed >= attacker.opened - 2, timeout=10,
                 message="the server to refuse the calls over the per-address budget")
        # an agent that connects during the attack ships its events
        agent.start()
        (www / "during-attack.html").write_text("x")
        wait_for(lambda: str(www / "during-attack.html") in _fim_paths(collector, www),
                 timeout=20, message="the agent's event in the archive during the attack")
        # and another host can still enroll
        other = agent_factory(collector, name="other", start=False)
        assert other.enroll()
        # the two admitted calls are cancelled at the deadline (2 s here)
        wait_for(lambda: attacker.closed >= attacker.opened, timeout=20,
                 message="every slow-loris call ended by the server")
        wait_for(lambda: _health(collector).get("admission", {}).get("enrollment", {})
                 .get("deadline_cancelled", 0) >= 2, timeout=10,
                 message="the deadline cancellations in the health file")
    finally:
        attacker.stop()
    # hundreds of refusals, one log line for the address in this window
    lines = [line for line in _log_lines(collector, REFUSED_LINE)
             if line["address"] == "127.0.0.2"]
    assert len(lines) == 1, lines
    refused = _health(collector)["admission"]["enrollment"]["refused"]
    assert sum(refused.values()) >= 2, refused


def test_slow_loris_from_many_addresses_leaves_the_events_port_alone(
        collector: Collector, agent_factory: AgentFactory, tmp_path: Path) -> None:
    www = tmp_path / "www"
    www.mkdir()
    agent = agent_factory(collector, "--sensors", "fim", "--watch", str(www), start=False)
    agent.enroll()
    # 16 addresses x 32 calls: each address within its own budget, together more stuck
    # calls (32) than the enrollment server has threads (4)
    attackers = [SlowLoris("127.0.0.1", collector.port + 1, f"127.0.0.{10 + i}",
                           connections=2) for i in range(16)]
    try:
        for attacker in attackers:
            attacker.start()
        agent.start()   # connects to the events port while enrollment is swamped
        (www / "during-attack.html").write_text("x")
        wait_for(lambda: str(www / "during-attack.html") in _fim_paths(collector, www),
                 timeout=20, message="the agent's event in the archive during the attack")
        # the stuck calls beyond half the threads get the short deadline: all are gone
        # in seconds (at 5 s each, 32 calls on 4 threads would take 40 s)
        wait_for(lambda: all(a.closed >= a.opened for a in attackers), timeout=20,
                 message="every slow-loris call ended by the server")
    finally:
        for attacker in attackers:
            attacker.stop()
    wait_for(lambda: _health(collector).get("admission", {}).get("enrollment", {})
             .get("under_pressure"), timeout=10, message="short deadlines in the health file")
    other = agent_factory(collector, name="other", start=False)
    assert other.enroll()


def _enroll_raw(collector: Collector, token: str, csr: bytes = b"") -> grpc.RpcError | None:
    ca = (collector.data_dir / "pki" / "ca.crt").read_bytes()
    creds = grpc.ssl_channel_credentials(root_certificates=ca)
    with grpc.secure_channel(f"127.0.0.1:{collector.port + 1}", creds,
                             options=[("grpc.ssl_target_name_override", "localhost")]) as ch:
        try:
            pb_grpc.EnrollmentStub(ch).Enroll(
                pb.EnrollRequest(token=token, csr_pem=csr, hostname="probe"), timeout=10)
        except grpc.RpcError as e:
            return e
    return None


def test_bad_tokens_sign_nothing_and_rate_limit_is_logged_once_per_window(
        collector_factory: Factory, tmp_path: Path) -> None:
    from agent.enrollment import make_key_and_csr

    collector = collector_factory("--config", _config(tmp_path, (
        "enrollment:\n  per_address_burst: 3\n  per_address_per_minute: 1\n")))
    csr = make_key_and_csr(tmp_path / "probe.key")
    codes = []
    for _ in range(12):
        error = _enroll_raw(collector, "sgt_guessed-token", csr)
        assert error is not None
        codes.append(error.code())
        if error.code() is grpc.StatusCode.RESOURCE_EXHAUSTED:
            assert "too many enrollment attempts" in (error.details() or "")
    assert codes[:3] == [grpc.StatusCode.PERMISSION_DENIED] * 3
    assert set(codes[3:]) == {grpc.StatusCode.RESOURCE_EXHAUSTED}
    wait_for(lambda: _health(collector).get("admission"), timeout=10, message="health")
    enrollment = _health(collector)["admission"]["enrollment"]
    assert enrollment["signed"] == 0
    assert _log_lines(collector, "agent certificate signed") == []
    listing = cli("collector", "agents", "list", "--data-dir", str(collector.data_dir)).stdout
    assert listing.strip().count("\n") == 0, listing   # the header only: nobody enrolled
    # 12 refusals (3 bad tokens, 9 over the rate): one line, this window
    assert len(_log_lines(collector, REFUSED_LINE)) == 1


def _creds(state: Path) -> grpc.ChannelCredentials:
    return grpc.ssl_channel_credentials(root_certificates=(state / "ca.crt").read_bytes(),
                                        private_key=(state / "agent.key").read_bytes(),
                                        certificate_chain=(state / "agent.crt").read_bytes())


def _doc(seq: int) -> bytes:
    return json.dumps({
        "@timestamp": "2026-11-29T10:00:00.000000Z",
        "event": {"kind": "event", "dataset": "sisguard.fim", "category": ["file"],
                  "type": ["creation"], "action": "created"},
        "file": {"path": f"/var/www/html/{seq}.html"}}).encode()


class RogueStream:
    """One Stream of a raw gRPC client holding a real agent's key."""

    def __init__(self, channel: grpc.Channel) -> None:
        self._outbox: list[pb.AgentMessage | None] = []
        self._cond = threading.Condition()
        self.call = pb_grpc.IngestStub(channel).Stream(self._requests(), timeout=60)
        self.responses: Iterator[pb.CollectorMessage] = iter(self.call)
        self.send(pb.AgentMessage(hello=pb.Hello(agent_version="rogue")))

    def _requests(self) -> Iterator[pb.AgentMessage]:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: bool(self._outbox))
                message = self._outbox.pop(0)
            if message is None:
                return
            yield message

    def send(self, message: pb.AgentMessage | None) -> None:
        with self._cond:
            self._outbox.append(message)
            self._cond.notify_all()

    def next(self) -> pb.CollectorMessage:
        return next(self.responses)

    def close(self) -> None:
        self.send(None)
        self.call.cancel()


def test_a_third_stream_of_one_agent_is_refused_while_two_work(
        collector: Collector, agent_factory: AgentFactory) -> None:
    agent = agent_factory(collector, start=False)
    agent.enroll()
    seqs = itertools.count(1)
    with grpc.secure_channel(collector.address, _creds(agent.state_dir),
                             options=[("grpc.use_local_subchannel_pool", 1)]) as ch:
        first, second = RogueStream(ch), RogueStream(ch)
        assert first.next().WhichOneof("kind") == "welcome"
        assert second.next().WhichOneof("kind") == "welcome"
        third = RogueStream(ch)
        try:
            third.next()
            raise AssertionError("a third stream was accepted")
        except grpc.RpcError as e:
            assert e.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "already has 2 open streams" in (e.details() or "")
            assert "limits.max_streams_per_agent" in (e.details() or "")
        for n, stream in enumerate((first, second), 1):
            seq = next(seqs)
            stream.send(pb.AgentMessage(batch=pb.EventBatch(batch_id=n, events=[
                pb.Envelope(seq=seq, dataset="sisguard.fim", document=_doc(seq))])))
            reply = stream.next()
            assert reply.WhichOneof("kind") == "ack" and reply.ack.accepted == 1
        # a closed stream gives its place back
        first.close()
        wait_for(lambda: _stream_opens(ch), timeout=10, message="a new stream accepted")
        second.close()
        third.close()


def _stream_opens(channel: grpc.Channel) -> bool:
    stream = RogueStream(channel)
    try:
        return bool(stream.next().WhichOneof("kind") == "welcome")
    except grpc.RpcError:
        return False
    finally:
        stream.close()


def test_one_agents_flood_over_two_streams_is_held_to_one_bucket(
        collector_factory: Factory, agent_factory: AgentFactory, tmp_path: Path) -> None:
    rate, batch = 200, 50
    collector = collector_factory("--config", _config(tmp_path, (
        f"limits:\n  events_per_second: {rate}\n")))
    agent = agent_factory(collector, start=False)
    agent.enroll()
    seqs = itertools.count(1)
    seq_lock = threading.Lock()
    passed = [0, 0]
    stop = threading.Event()

    def flood(stream: RogueStream, index: int) -> None:
        for batch_id in itertools.count(1):
            if stop.is_set():
                return
            with seq_lock:
                events = [next(seqs) for _ in range(batch)]
            stream.send(pb.AgentMessage(batch=pb.EventBatch(batch_id=batch_id, events=[
                pb.Envelope(seq=s, dataset="sisguard.fim", document=_doc(s)) for s in events])))
            try:
                reply = stream.next()
            except grpc.RpcError:
                return
            if reply.WhichOneof("kind") == "ack":
                passed[index] += batch   # throttled before processing, whatever the verdict

    with grpc.secure_channel(collector.address, _creds(agent.state_dir)) as ch:
        streams = [RogueStream(ch), RogueStream(ch)]
        for stream in streams:
            assert stream.next().WhichOneof("kind") == "welcome"
        started = time.monotonic()
        threads = [threading.Thread(target=flood, args=(s, i)) for i, s in enumerate(streams)]
        for thread in threads:
            thread.start()
        wait_for(lambda: sum(passed) >= 3 * rate, timeout=30,
                 message="the flood to get some events through")
        elapsed = time.monotonic() - started
        total = sum(passed)
        stop.set()
        for stream in streams:
            stream.close()
        for thread in threads:
            thread.join(timeout=10)
    # one bucket: its burst (one second's worth) plus its rate, whatever the stream count
    # (a bucket per stream would let through twice this); an upper bound on throughput,
    # so a slow machine can only make it easier to hold
    print(f"flood: {total} events in {elapsed:.2f} s over two streams, rate {rate}/s")
    assert total <= rate + rate * elapsed + 2 * batch, (total, elapsed)
    assert min(passed) > 0, passed   # both streams were served
    throttled = wait_for(lambda: _health(collector).get("admission", {}).get("streams", {})
                         .get("throttled_seconds"), timeout=10, message="throttling in health")
    assert throttled > 0
