"""Detection workers: N processes give what one engine gives, event by event; reloads
reach every worker; a worker that dies is restarted and the batch re-run."""

from __future__ import annotations

import copy
import datetime as dt
import json
import os
import random
import signal
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.identity import Credentials, Identity
from agent.shipper import Shipper, ShipperSettings
from agent.spool import Spool
from collector.config import CollectorConfig, DetectionConfig
from collector.detection import DetectionEngine, load_rules
from collector.detection.worker_main import WorkerSettings
from collector.detection.workers import (
    WorkerPool,
    by_sender,
    default_workers,
    pool_for,
    route_key,
)
from common.errors import ConfigError
from common.yamlconf import from_dict
from sisguard.v1 import sisguard_pb2 as pb
from tests.harness import Agent, Collector, port_open, wait_for

RULES = Path(__file__).resolve().parents[3] / "rules"
BASE = dt.datetime(2026, 11, 27, 1, 0, tzinfo=dt.UTC)
WORKERS = 3
_LOADED: list[Any] = []


def shipped() -> Any:
    """The shipped rules, loaded once for the module (a LoadResult is read-only here)."""
    if not _LOADED:
        _LOADED.append(load_rules([RULES]))
    return _LOADED[0]


def _stamp(t: dt.datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _ssh(outcome: str, ip: str) -> dict[str, Any]:
    return {"event": {"kind": "event", "module": "sisguard", "dataset": "sisguard.auth",
                      "category": ["authentication"], "type": ["start"],
                      "action": "ssh_login", "outcome": outcome},
            "process": {"name": "sshd", "pid": 3000}, "user": {"name": "root"},
            "source": {"ip": ip, "port": 40000}, "sisguard": {"auth": {"method": "password"}},
            "message": f"{outcome} password for root from {ip}"}


def mixed_stream(agents: int, per_agent: int, seed: int = 14) -> list[dict[str, Any]]:
    """Every shipped rule's test events, brute forces (some followed by a success),
    events dated far ahead (the clock's skew alert), spread over many agents and
    interleaved; each agent's own events in its time order, as an agent sends them."""
    rng = random.Random(seed)
    samples = [ev for rule in shipped().rules for case in rule.tests
               for ev in case.events]
    queues: list[list[dict[str, Any]]] = []
    for _ in range(agents):
        docs: list[dict[str, Any]] = []
        while len(docs) < per_agent:
            pick = rng.random()
            if pick < 0.25:   # a brute force from one address, sometimes a success after
                ip = f"203.0.113.{rng.randrange(1, 4)}"
                docs.extend(_ssh("failure", ip) for _ in range(rng.randrange(4, 9)))
                if rng.random() < 0.6:
                    docs.append(_ssh("success", ip))
            else:
                docs.append(copy.deepcopy(rng.choice(samples)))
        queues.append(docs[:per_agent])
    stream: list[dict[str, Any]] = []
    clocks = [BASE + dt.timedelta(seconds=rng.randrange(0, 30)) for _ in range(agents)]
    seqs = [0] * agents
    live = [a for a in range(agents) if queues[a]]
    while live:
        a = rng.choice(live)
        doc = queues[a].pop(0)
        if not queues[a]:
            live.remove(a)
        seqs[a] += 1
        clocks[a] += dt.timedelta(seconds=rng.choice((1, 2, 3, 5, 40)))
        agent_id = f"agent-{a:03d}"
        doc.setdefault("event", {}).update(id=f"{agent_id}-{seqs[a]}", sequence=seqs[a],
                                           ingested=_stamp(clocks[a]))
        ahead = rng.random() < 0.02
        doc["@timestamp"] = _stamp(clocks[a] + dt.timedelta(days=3 if ahead else 0))
        doc["agent"] = {"id": agent_id, "name": f"host{a}", "type": "sisguard"}
        doc["host"] = {"name": f"host{a}.example.gov.vn"}
        doc["organization"] = {"name": f"org{a % 4}"}
        stream.append(doc)
    return stream


@pytest.fixture(scope="module")
def pool() -> Iterator[WorkerPool]:
    pool = WorkerPool(WorkerSettings(paths=(str(RULES),), workers=WORKERS), shipped())
    try:
        yield pool
    finally:
        pool.close()


def test_n_workers_give_the_alerts_of_one_engine(pool: WorkerPool) -> None:
    stream = mixed_stream(agents=40, per_agent=100)
    alone = DetectionEngine(load_rules([RULES]))   # its own rules: engines link them
    one_events = copy.deepcopy(stream)
    expected = [alone.process(ev) for ev in one_events]
    many_events = copy.deepcopy(stream)
    got: list[list[dict[str, Any]]] = []
    rng = random.Random(1)
    i = 0
    while i < len(many_events):  # batches of mixed agents and sizes, in stream order
        size = rng.randrange(1, 400)
        got.extend(pool.process_many(many_events[i:i + size]))
        i += size
    assert len(got) == len(expected)
    for ev, want, have in zip(stream, expected, got, strict=True):
        assert have == want, ev["event"]["id"]
    assert many_events == one_events   # the clock's flags (sisguard.time_skew) too
    titles = {a["rule"]["name"] for found in expected for a in found}
    correlated = sum(1 for found in expected for a in found
                     if a["sisguard"]["alert"].get("correlation"))
    assert {"SSH Brute Force From One Address", "SSH Login Success After Brute Force",
            "Event time outside the trusted clock skew"} <= titles, titles
    assert correlated >= 50
    # the engines' counters, summed over the workers, are the one engine's
    stats, single = pool.stats(), alone.stats()
    for key in ("events", "alerts", "errors", "time_skew_alerts"):
        assert stats[key] == single[key], key
    assert stats["workers"]["count"] == WORKERS and stats["workers"]["by_agent"]


def test_routing_is_by_the_collectors_agent_id() -> None:
    assert by_sender(shipped())
    assert route_key({"agent": {"id": "a1"}}) == b"a1"
    assert route_key({"agent": "a1"}) == route_key({}) == b""
    assert route_key({"agent": {"id": "\udcff"}}) == "\udcff".encode("utf-8", "surrogatepass")


RULE = """\
title: Marker
id: 22222222-2222-2222-2222-000000000001
level: high
logsource:
    product: linux
    category: process_creation
detection:
    sel:
        CommandLine|contains: '{marker}'
    condition: sel
"""


def _proc(agent: str, command: str, n: int) -> dict[str, Any]:
    return {"@timestamp": "2026-11-27T01:00:00Z", "agent": {"id": agent},
            "event": {"id": f"{agent}-{n}", "dataset": "sisguard.process", "kind": "event",
                      "action": "exec", "type": ["start"], "category": ["process"]},
            "process": {"command_line": command, "executable": "/usr/bin/x", "name": "x"}}


def test_reload_reaches_every_worker_and_a_dead_worker_is_restarted(tmp_path: Path) -> None:
    rules = tmp_path / "rules"
    rules.mkdir()
    path = rules / "marker.yml"
    path.write_text(RULE.format(marker="first-marker"), encoding="utf-8")
    pool = WorkerPool(WorkerSettings(paths=(str(rules),), workers=2),
                      load_rules([rules]))
    try:
        agents = [f"agent-{i}" for i in range(8)]   # some on each worker
        events = [_proc(a, "run second-marker", i) for i, a in enumerate(agents)]
        assert pool.process_many(copy.deepcopy(events)) == [[] for _ in agents]
        path.write_text(RULE.format(marker="second-marker"), encoding="utf-8")
        pool.replace(load_rules([rules]))
        assert all(len(found) == 1 for found in pool.process_many(copy.deepcopy(events)))
        # kill one worker: the pool starts another (with the reloaded rules) and sends
        # it the batch again
        victim = pool.pids()[0]
        os.kill(victim, signal.SIGKILL)
        assert all(len(found) == 1 for found in pool.process_many(copy.deepcopy(events)))
        wait_for(lambda: pool.stats()["workers"]["restarts"] == 1, timeout=60)
        assert victim not in pool.pids()
    finally:
        pool.close()
    assert pool.process_many([]) == []


def test_detection_workers_config(tmp_path: Path) -> None:
    assert DetectionConfig().workers is None
    assert default_workers() >= 1
    config = from_dict(CollectorConfig, {"detection": {"workers": 1}}, source="t.yml")
    assert pool_for(config, shipped()) is None   # 1: inline, no process
    for bad in (0, -2, True, "two"):
        with pytest.raises(ConfigError, match="workers"):
            from_dict(CollectorConfig, {"detection": {"workers": bad}}, source="t.yml")
    text = textwrap.dedent(json.dumps({"detection": {"workers": 3, "nope": 1}}))
    with pytest.raises(ConfigError, match="nope"):
        from_dict(CollectorConfig, json.loads(text), source="t.yml")


def test_a_collector_with_two_detection_workers(tmp_path: Path) -> None:
    """The real collector with ``detection.workers: 2``: a brute force sent over mutual
    TLS by the agent's own shipper is alerted, the health file counts two workers, and
    the workers end with the collector."""
    config = tmp_path / "collector.yml"
    config.write_text(f"rules:\n  paths: [{RULES}]\n  reload: false\n"
                      "detection:\n  workers: 2\n")
    collector = Collector(tmp_path / "collector", extra=["--config", str(config)])
    try:
        collector.start()
    except AssertionError:   # the workers load their rules before the port opens
        wait_for(lambda: port_open(collector.port), timeout=120, message="collector up")
    assert collector.proc is not None and collector.proc.popen is not None
    pid = collector.proc.popen.pid
    agent = Agent(tmp_path / "agent", collector)
    agent.enroll()
    spool = Spool(agent.state_dir / "spool.db", agent_id=Identity.load(agent.state_dir).agent_id)
    now = dt.datetime.now(dt.UTC)
    spool.append([{**_ssh("failure", "203.0.113.77"), "host": {"hostname": "web7"},
                   "@timestamp": _stamp(now - dt.timedelta(seconds=20 - i))}
                  for i in range(7)])
    shipper = Shipper(spool=spool, collectors=[collector.address],
                      credentials=Credentials.load(agent.state_dir), hostname="web7",
                      settings=ShipperSettings(), heartbeat=lambda: pb.Heartbeat())
    shipper.start()
    try:
        wait_for(lambda: [a for a in collector.alerts()
                          if a["rule"]["name"] == "SSH Brute Force From One Address"],
                 timeout=60, message="the brute-force alert in the archive")
        health = collector.data_dir / "health.json"
        wait_for(lambda: health.exists() and (json.loads(health.read_text()).get("detection")
                                              or {}).get("workers", {}).get("count") == 2,
                 timeout=30, message="two workers in the health file")
        workers = [int(c) for task in Path(f"/proc/{pid}/task").iterdir()
                   for c in (task / "children").read_text().split()]
        assert len(workers) == 2
    finally:
        shipper.stop()
        shipper.join(5)
        spool.close()
        collector.proc.stop()
    wait_for(lambda: not any(Path(f"/proc/{w}").exists() for w in workers), timeout=20,
             message="the workers gone with the collector")
