"""Metrics and health of a running collector: a real agent, a real search engine.

``/metrics`` is scraped over HTTP from ``sisguard-collector run --metrics``; the gRPC
health service is asked with the standard ``grpc_health.v1`` stubs, on the enrollment
port (server TLS: no client certificate needed) and on the events port (mutual TLS).
"""

from __future__ import annotations

import re
import urllib.request
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families

from tests.collector.test_metrics import referenced_metrics
from tests.harness import REPO, Agent, Collector, free_port, wait_for
from tests.search import SearchNode

AgentFactory = Callable[..., Agent]
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(port: int) -> Samples:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
        text = reply.read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def _health(collector: Collector, *, service: str = "", events_port: bool = False,
            agent: Agent | None = None) -> int:
    ca = (collector.data_dir / "pki" / "ca.crt").read_bytes()
    if events_port:
        assert agent is not None
        creds = grpc.ssl_channel_credentials(
            root_certificates=ca, private_key=(agent.state_dir / "agent.key").read_bytes(),
            certificate_chain=(agent.state_dir / "agent.crt").read_bytes())
        port = collector.port
    else:
        creds = grpc.ssl_channel_credentials(root_certificates=ca)
        port = collector.port + 1
    with grpc.secure_channel(f"127.0.0.1:{port}", creds) as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=service), timeout=5)
        return int(reply.status)


SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def test_counters_move_when_events_flow(collector_factory: Callable[..., Collector],
                                        agent_factory: AgentFactory,
                                        tmp_path: Path) -> None:
    port = free_port()
    # an export to a SOC receiver that is not there: its alerts wait in its queue
    collector_config = tmp_path / "collector.yml"
    collector_config.write_text(f"outputs:\n  soc:\n    type: syslog\n    host: 127.0.0.1\n"
                                f"    port: {free_port()}\n    connect_timeout: 1s\n")
    collector = collector_factory("--config", str(collector_config),
                                  "--metrics", f"127.0.0.1:{port}",
                                  "--rules", str(REPO / "rules"))
    www = tmp_path / "www"
    www.mkdir()
    config = tmp_path / "agent.yml"
    config.write_text("heartbeat_interval: 1s\nsensors: [fim]\n")
    agent = agent_factory(collector, "--config", str(config), "--web-root", str(www))
    wait_for(lambda: value(scrape(port), "sisguard_agents_connected") == 1, timeout=20,
             message="the agent connected, in /metrics")
    before = scrape(port)
    assert value(before, "sisguard_rules_loaded") > 10
    assert value(before, "sisguard_rule_load_errors") == 0
    assert value(before, "sisguard_streams") == 1
    assert value(before, "sisguard_output_up", output="archive") == 1
    assert value(before, "sisguard_output_outage") == 0
    for i in range(20):
        (www / f"page{i}.html").write_text(f"<p>{i}</p>\n")
    # a web shell: the shipped rules alert on it
    (www / "shell.php").write_text("<?php system($_GET['c']); ?>\n")

    def moved() -> Samples | None:
        now = scrape(port)
        received = value(now, "sisguard_events_received_total")
        stored = value(now, "sisguard_output_documents_total", output="archive",
                       outcome="stored")
        grown = received >= value(before, "sisguard_events_received_total") + 21
        return now if grown and stored >= received else None

    after = wait_for(moved, timeout=30, message="received and stored counters moving")
    assert value(after, "sisguard_ack_latency_seconds_count") >= 1
    assert value(after, "sisguard_output_batch_seconds_count", output="archive") >= 1
    alerts = {labels: v for (name, labels), v in after.items()
              if name == "sisguard_alerts_total"}
    assert alerts, "alerts by rule and severity"
    assert all(dict(labels)["severity"] in {"low", "medium", "high", "critical"}
               for labels in alerts)
    assert value(after, "sisguard_agents", status="online") == 1
    export_up = ("sisguard_export_up", (("output", "soc"),))
    wait_for(lambda: scrape(port).get(export_up) == 0, timeout=20,
             message="the export's failing receiver in /metrics")
    assert value(scrape(port), "sisguard_export_queue_records", output="soc") >= 1
    # per-agent series, for the agents the store knows, from their heartbeats
    series = ("sisguard_agent_spool_dropped", (("agent_id", agent.agent_id),))
    wait_for(lambda: series in scrape(port), timeout=20,
             message="the agent's spool drops in /metrics")
    # every series the shipped alerting rules ask for is one the collector exports
    exported = {re.sub(r"_(bucket|count|sum|total)$", "", name) for name, _ in after}
    exported |= {name for name, _ in after}
    assert referenced_metrics() <= exported, referenced_metrics() - exported
    assert _health(collector) == SERVING
    assert _health(collector, service="sisguard.v1.Ingest") == SERVING
    assert _health(collector, events_port=True, agent=agent) == SERVING
    with pytest.raises(grpc.RpcError) as unknown:
        _health(collector, service="nope")
    assert unknown.value.code() is grpc.StatusCode.NOT_FOUND


def test_outage_gauge_and_health_follow_the_engine(collector_factory: Callable[..., Collector],
                                                   agent_factory: AgentFactory,
                                                   tmp_path: Path) -> None:
    node = SearchNode(tmp_path / "search")
    try:
        url = node.start()
        config = tmp_path / "collector.yml"
        config.write_text(f"elasticsearch:\n  url: [{url}]\n  index_prefix: metrics\n"
                          f"archive:\n  enabled: false\n")
        port = free_port()
        collector = collector_factory("--config", str(config), "--metrics", f"127.0.0.1:{port}")
        www = tmp_path / "www"
        www.mkdir()
        agent = agent_factory(collector, "--sensors", "fim", "--watch", str(www))
        wait_for(lambda: value(scrape(port), "sisguard_output_documents_total",
                               output="elasticsearch", outcome="stored") >= 1, timeout=30,
                 message="the agent_started event stored in Elasticsearch")
        assert value(scrape(port), "sisguard_output_outage") == 0
        assert _health(collector) == SERVING
        node.stop()
        (www / "during.html").write_text("outage\n")

        def in_outage() -> Samples | None:
            now = scrape(port)
            return now if value(now, "sisguard_output_outage") == 1 else None

        during = wait_for(in_outage, timeout=60, interval=0.5,
                          message="the outage gauge set while the engine is stopped")
        assert value(during, "sisguard_output_up", output="elasticsearch") == 0
        wait_for(lambda: value(scrape(port), "sisguard_output_pending_batches",
                               output="elasticsearch") >= 1, timeout=30,
                 message="a batch waiting for Elasticsearch")
        assert _health(collector) == NOT_SERVING
        assert _health(collector, events_port=True, agent=agent) == NOT_SERVING
        node.start()
        wait_for(lambda: value(scrape(port), "sisguard_output_outage") == 0, timeout=120,
                 interval=0.5, message="the outage gauge cleared once the engine is back")
        after = scrape(port)
        assert value(after, "sisguard_output_up", output="elasticsearch") == 1
        assert value(after, "sisguard_output_outage_seconds", output="elasticsearch") == 0
        assert value(after, "sisguard_output_unavailable_total", output="elasticsearch") >= 1
        assert _health(collector) == SERVING
    finally:
        node.stop()
