"""The metrics HTTP server's budget, the meter's bounds, the metrics config."""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry, Counter

from collector.config import load_config
from collector.metrics import MAX_LABEL_SETS, OTHER, IngestMeter, _bounded, parse_listen
from collector.metrics_http import MetricsServer
from collector.records import Kind, Record
from common.errors import ConfigError, SisguardError
from tests.harness import REPO, wait_for


@pytest.fixture
def server() -> Iterator[MetricsServer]:
    registry = CollectorRegistry()
    Counter("sisguard_test_things", "things", registry=registry).inc(3)
    s = MetricsServer(("127.0.0.1", 0), registry, max_connections=2, timeout=1.0)
    s.start()
    yield s
    s.stop()


def _get(port: int, path: str = "/metrics") -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as reply:
        return str(reply.read().decode())


def _closed_without_reply(port: int) -> bool:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"GET /metrics HTTP/1.0\r\n\r\n")
        try:
            return s.recv(100) == b""
        except ConnectionResetError:
            return True


def test_serves_the_registry_and_nothing_else(server: MetricsServer) -> None:
    assert "sisguard_test_things_total 3.0" in _get(server.port)
    with pytest.raises(urllib.error.HTTPError) as e:
        _get(server.port, "/")
    assert e.value.code == 404


def test_slow_clients_hold_at_most_the_budget_and_are_let_go(server: MetricsServer) -> None:
    # the attacker: two connections that never finish their request (slow loris)
    slow = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(2)]
    for s in slow:
        s.sendall(b"GET /met")
    try:
        wait_for(lambda: _closed_without_reply(server.port), timeout=5,
                 message="a third connection closed at once while two hold the budget")
        assert server.refused >= 1
        # the server lets the slow ones go at its timeout: they see the connection end
        for s in slow:
            s.settimeout(10)
            assert s.recv(4096) == b"", "a slow client is disconnected, not answered"
    finally:
        for s in slow:
            s.close()
    text = wait_for(lambda: _try_get(server.port), timeout=10,
                    message="scrapes served again once the slow clients are gone")
    assert "sisguard_test_things_total" in text


def test_a_trickling_client_meets_the_connection_deadline(server: MetricsServer) -> None:
    """A byte every 0.3 s never trips the 1 s socket timeout; the 2 s deadline ends it."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
        def cut() -> bool:
            try:
                s.sendall(b"X")
            except OSError:
                return True
            s.settimeout(0.3)
            try:
                return s.recv(100) == b""
            except TimeoutError:
                return False
            except OSError:
                return True

        wait_for(cut, timeout=10, interval=0.0, message="the trickling client cut off")


def _try_get(port: int) -> str | None:
    try:
        return _get(port)
    except (urllib.error.URLError, ConnectionError):
        return None


def test_alert_labels_are_bounded() -> None:
    meter = IngestMeter(CollectorRegistry())
    records = [Record(Kind.ALERT, str(i), {"rule": {"id": f"r{i}"},
                                           "sisguard": {"alert": {"level": "high"}}})
               for i in range(MAX_LABEL_SETS + 50)]
    records.append(Record(Kind.EVENT, "e", {"rule": {"id": "not-an-alert"}}))
    meter.stored(records)
    alerts = meter.snapshot()["alerts"]
    assert len(alerts) == MAX_LABEL_SETS + 1
    assert alerts[(OTHER, OTHER)] == 50
    assert ("not-an-alert", "high") not in alerts


def test_bounded_folds_the_rest_into_other() -> None:
    items = {f"k{i:05d}": 1 for i in range(MAX_LABEL_SETS + 10)}
    out = dict(_bounded(items))
    assert len(out) == MAX_LABEL_SETS
    assert out[OTHER] == 11
    assert dict(_bounded({"a": 2})) == {"a": 2}


def test_outage_is_per_output_and_cleared() -> None:
    meter = IngestMeter(CollectorRegistry())
    meter.failed("elasticsearch")
    first = meter.outages()["elasticsearch"]
    meter.failed("elasticsearch")
    assert meter.outages() == {"elasticsearch": first}, "the outage began at the first failure"
    meter.succeeded("elasticsearch")
    assert meter.outages() == {}


def test_parse_listen() -> None:
    assert parse_listen("127.0.0.1:9464") == ("127.0.0.1", 9464)
    assert parse_listen("[::1]:9464") == ("::1", 9464)
    assert parse_listen(":9464") == ("0.0.0.0", 9464)
    for bad in ("9464", "host:", "host:99999", "host:x"):
        with pytest.raises(SisguardError):
            parse_listen(bad)


def test_metrics_config_off_by_default_and_strict(tmp_path: Path) -> None:
    assert load_config(None, {}).metrics.listen is None
    config = load_config(None, {"metrics": {"listen": "127.0.0.1:9464"}})
    assert config.metrics.listen == "127.0.0.1:9464"
    path = tmp_path / "collector.yml"
    path.write_text("metrics:\n  listen: 127.0.0.1:9464\n  max_conections: 2\n")
    with pytest.raises(ConfigError, match="max_conections"):
        load_config(path, {})
    path.write_text("metrics:\n  max_connections: 0\n")
    with pytest.raises(ConfigError, match="max_connections"):
        load_config(path, {})


ALERT_RULES = REPO / "deploy" / "prometheus" / "sisguard-alerts.yml"


def alert_rules() -> list[dict[str, Any]]:
    data = yaml.safe_load(ALERT_RULES.read_text())
    return [rule for group in data["groups"] for rule in group["rules"]]


def referenced_metrics() -> set[str]:
    """The sisguard_* series the shipped alerting rules ask for."""
    return {name for rule in alert_rules()
            for name in re.findall(r"\bsisguard_[a-z_]+", rule["expr"])}


def test_shipped_alerting_rules_are_well_formed() -> None:
    rules = alert_rules()
    names = {r["alert"] for r in rules}
    for wanted in ("SisguardCollectorDown", "SisguardOutputOutage", "SisguardDeadLettersRising",
                   "SisguardAgentsOffline", "SisguardAckLatencyHigh"):
        assert wanted in names
    for rule in rules:
        assert set(rule) <= {"alert", "expr", "for", "labels", "annotations"}, rule["alert"]
        assert rule["labels"]["severity"] in {"warning", "critical"}
        assert rule["annotations"]["summary"]
        expr = rule["expr"]
        assert expr.count("(") == expr.count(")") and expr.count("{") == expr.count("}")
    assert "sisguard_output_outage_seconds" in referenced_metrics()
    promtool = shutil.which("promtool")
    if promtool:   # Debian's prometheus package: optional here, checked when present
        result = subprocess.run([promtool, "check", "rules", str(ALERT_RULES)],
                                capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stdout + result.stderr


class _Export:
    name = "soc"

    def __init__(self, **health: Any) -> None:
        self._health = health

    def health(self) -> dict[str, Any]:
        return self._health


def test_export_queues_are_gauged_and_outputs_without_a_queue_left_out() -> None:
    from collector.metrics import export_metrics

    class _Plain(_Export):
        name = "archive"

    families = {f.name: f for f in export_metrics([
        _Export(queue_depth=7, queue_bytes=2048, queue_max_bytes=4096, oldest_age=12.5,
                delivered=3, rejected=1, dropped=2, outage_since=1.0e9),
        _Plain(stored=5)])}
    def value(name: str) -> list[tuple[dict[str, str], float]]:
        return [(s.labels, s.value) for s in families[name].samples
                if not s.name.endswith("_created")]
    assert value("sisguard_export_queue_records") == [({"output": "soc"}, 7.0)]
    assert value("sisguard_export_oldest_seconds") == [({"output": "soc"}, 12.5)]
    assert value("sisguard_export_dropped") == [({"output": "soc"}, 2.0)]
    assert value("sisguard_export_up") == [({"output": "soc"}, 0.0)]
