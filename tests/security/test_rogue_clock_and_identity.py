"""A rogue agent against correlation, through a real collector: its clock, its host name.

Two agents enrolled by two agencies under the same host name ``hostA``. The rogue one
(agency C), a raw gRPC client holding its real certificate and key, sends a failed SSH
login dated 2099 and two failed logins from the attacker's address in between agency A's
six: agency A's brute-force alert still fires, made of A's events alone; the rogue event
is stored flagged (``sisguard.time_skew``) with an alert of its own; no archive file is
dated by the agent's clock. The rogue's documents also name agency A as their
organization: its events and alerts carry agency C's.
"""

from __future__ import annotations

import json
import queue
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc

from sisguard.v1 import sisguard_pb2 as pb
from sisguard.v1 import sisguard_pb2_grpc as pb_grpc
from tests.harness import REPO, Collector, cli, wait_for

BRUTE_FORCE = "27346c19-5e37-480f-bacf-a7815221eab9"
TIME_SKEW = "5f1d3c2e-7a4b-4e59-9a35-0c7d8e2b6f10"
ATTACKER = "203.0.113.77"


def enroll(collector: Collector, state: Path, org: str) -> str:
    token = collector.token("--org", org)
    out = cli("agent", "enroll", "--collector", collector.address, "--token", token,
              "--ca-fingerprint", collector.fingerprint, "--state-dir", str(state),
              "--hostname", "hostA").stdout
    return out.split("agent id ", 1)[1].split(",", 1)[0].strip()


def failure(at: datetime | str, n: int, **claims: Any) -> bytes:
    stamp = at if isinstance(at, str) else at.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return json.dumps({**claims,
        "@timestamp": stamp,
        "event": {"kind": "event", "module": "sisguard", "dataset": "sisguard.auth",
                  "category": ["authentication"], "type": ["start"], "action": "ssh_login",
                  "outcome": "failure"},
        "host": {"hostname": "hostA"}, "process": {"name": "sshd", "pid": 3000 + n},
        "user": {"name": "root"}, "source": {"ip": ATTACKER, "port": 40000 + n},
        "message": f"Failed password for root from {ATTACKER} port {40000 + n} ssh2",
    }).encode()


def send(collector: Collector, state: Path, first_seq: int, documents: list[bytes]) -> None:
    """One stream with the agent's own certificate: hello, one batch, until its ack."""
    creds = grpc.ssl_channel_credentials(root_certificates=(state / "ca.crt").read_bytes(),
                                         private_key=(state / "agent.key").read_bytes(),
                                         certificate_chain=(state / "agent.crt").read_bytes())
    outbox: queue.Queue[pb.AgentMessage | None] = queue.Queue()
    outbox.put(pb.AgentMessage(hello=pb.Hello(agent_version="rogue", hostname="hostA")))

    def requests() -> Iterator[pb.AgentMessage]:
        while (message := outbox.get(timeout=20)) is not None:
            yield message

    batch = pb.EventBatch(batch_id=1, events=[
        pb.Envelope(seq=first_seq + i, dataset="sisguard.auth", document=doc)
        for i, doc in enumerate(documents)])
    with grpc.secure_channel(collector.address, creds,
                             options=[("grpc.ssl_target_name_override", "localhost")]) as ch:
        for reply in pb_grpc.IngestStub(ch).Stream(requests(), timeout=20):
            if reply.HasField("welcome"):
                outbox.put(pb.AgentMessage(batch=batch))
            elif reply.HasField("ack"):
                assert reply.ack.accepted == len(documents), reply.ack
                outbox.put(None)
                break


def test_rogue_clock_and_shared_host_name_change_nothing_for_another_agency(
        collector_factory: Callable[..., Collector], tmp_path: Path) -> None:
    collector = collector_factory("--rules", str(REPO / "rules" / "auth"))
    honest_state, rogue_state = tmp_path / "agency-a", tmp_path / "agency-c"
    honest = enroll(collector, honest_state, "agency-a")
    rogue = enroll(collector, rogue_state, "agency-c")
    now = datetime.now(UTC)
    send(collector, honest_state, 1, [failure(now + timedelta(seconds=i), i) for i in range(3)])
    # the rogue also names agency A as its organization: replaced by its own
    claim = {"organization": {"id": "agency-a", "name": "agency-a"}}
    send(collector, rogue_state, 1, [failure("2099-01-01T00:00:00Z", 90, **claim),
                                     failure(now + timedelta(seconds=3), 91, **claim),
                                     failure(now + timedelta(seconds=4), 92, **claim)])
    send(collector, honest_state, 4, [failure(now + timedelta(seconds=5 + i), 3 + i)
                                      for i in range(3)])

    def alerts_of(rule_id: str) -> list[dict[str, Any]] | None:
        found = [a for a in collector.alerts() if a["rule"]["id"] == rule_id]
        return found or None

    (fired,) = wait_for(lambda: alerts_of(BRUTE_FORCE), timeout=20,
                        message=f"brute-force alert\n{collector.proc and collector.proc.tail()}")
    assert fired["agent"]["id"] == honest
    assert fired["organization"] == {"id": "agency-a", "name": "agency-a"}
    assert fired["host"]["name"] == "hostA" and fired["source"]["ip"] == ATTACKER
    assert sorted(fired["sisguard"]["alert"]["event_ids"]) == sorted(
        f"{honest}-{seq}" for seq in range(1, 7))
    (skew,) = wait_for(lambda: alerts_of(TIME_SKEW), timeout=10, message="time-skew alert")
    assert skew["agent"]["id"] == rogue
    stored = {e["event"]["id"]: e for e in collector.events()}
    assert stored[f"{rogue}-1"]["sisguard"]["time_skew"] > 70 * 365 * 86400
    assert "time_skew" not in stored[f"{rogue}-2"].get("sisguard", {})
    assert [stored[f"{rogue}-{seq}"]["organization"] for seq in (1, 2, 3)] == \
        [{"id": "agency-c", "name": "agency-c"}] * 3
    assert skew["organization"] == {"id": "agency-c", "name": "agency-c"}
    days = {now.strftime("%Y-%m-%d"), datetime.now(UTC).strftime("%Y-%m-%d")}  # midnight
    files = sorted(p.name for p in (collector.data_dir / "archive").glob("*.jsonl"))
    assert files and all(any(day in name for day in days) for name in files), files
