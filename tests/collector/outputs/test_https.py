"""The HTTPS export against a TLS receiver on loopback (python's http.server, mTLS and
a bearer token): 503s and a wrong token are retried, a poison record is isolated and
refused alone, nothing else is lost."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from collector.outputs.forwarder import FilterConfig, QueueConfig
from collector.outputs.https import HttpsConfig, HttpsOutput, read_token
from collector.outputs.registry import OutputContext
from collector.records import Kind, Outcome, Record
from common.errors import ConfigError
from common.yamlconf import Duration
from tests.collector.outputs.receivers import HttpsReceiver, Tls, make_tls
from tests.harness import wait_for

TOKEN = "s3cret-token-for-the-soc"


@pytest.fixture
def tls(tmp_path: Path) -> Tls:
    return make_tls(tmp_path / "tls")


@pytest.fixture
def receiver(tls: Tls) -> Iterator[HttpsReceiver]:
    r = HttpsReceiver(tls, TOKEN)
    r.start()
    yield r
    r.stop()


def output(tmp_path: Path, tls: Tls, receiver: HttpsReceiver, *, token: str = TOKEN,
           **filter_keys: object) -> HttpsOutput:
    token_file = tmp_path / "token"
    token_file.write_text(token + "\n")
    token_file.chmod(0o600)
    config = HttpsConfig(url=receiver.url, ca=tls.ca, cert=tls.client_cert,
                         key=tls.client_key, token_file=token_file,
                         filter=FilterConfig(**filter_keys),  # type: ignore[arg-type]
                         queue=QueueConfig(backoff_initial=Duration(0.05),
                                           backoff_max=Duration(0.2), batch_max_records=8))
    out = HttpsOutput("soc", config, OutputContext(data_dir=tmp_path / "data"))
    out.connect()
    return out


def alerts(n: int, start: int = 0, **extra: object) -> list[Record]:
    return [Record(Kind.ALERT, f"alert-{i}", {"event": {"kind": "alert", "id": f"alert-{i}",
                                                        "severity": 47}, **extra})
            for i in range(start, start + n)]


def test_503s_then_recovery_lose_nothing(tmp_path: Path, tls: Tls,
                                         receiver: HttpsReceiver) -> None:
    receiver.failing.set()
    out = output(tmp_path, tls, receiver)
    try:
        result = out.publish(alerts(30))
        assert result.outcomes == [Outcome.STORED] * 30     # queued: publish did not wait
        wait_for(lambda: receiver.statuses[503] >= 3, message="retries while failing")
        assert out.health()["queue_depth"] == 30 and out.health()["outage_since"]
        receiver.failing.clear()
        wait_for(lambda: len(receiver.taken) == 30, message="all 30 after recovery")
        wait_for(lambda: out.health()["queue_depth"] == 0, message="queue drained")
        assert set(receiver.taken.values()) == {1}
        assert out.health()["outage_since"] is None
    finally:
        out.close()


def test_a_poison_record_is_refused_alone_and_the_rest_arrive(
        tmp_path: Path, tls: Tls, receiver: HttpsReceiver) -> None:
    out = output(tmp_path, tls, receiver)
    try:
        records = alerts(3) + alerts(1, start=3, poison=True) + alerts(4, start=4)
        out.publish(records)
        wait_for(lambda: out.health()["queue_depth"] == 0, message="queue drained")
        assert sorted(receiver.taken) == sorted(f"alert-{i}" for i in range(8) if i != 3)
        assert out.health()["rejected"] == 1
    finally:
        out.close()


def test_a_wrong_token_is_retried_never_dropped_and_a_new_token_file_is_read(
        tmp_path: Path, tls: Tls, receiver: HttpsReceiver) -> None:
    out = output(tmp_path, tls, receiver, token="expired")
    try:
        out.publish(alerts(2))
        wait_for(lambda: receiver.statuses[401] >= 2, message="401s")
        assert out.health()["queue_depth"] == 2 and "401" in out.health()["last_error"]
        (tmp_path / "token").write_text(TOKEN)        # the operator rotates it
        wait_for(lambda: len(receiver.taken) == 2, message="both after the new token")
    finally:
        out.close()


def test_filter_alerts_by_default_events_by_dataset_and_min_severity(
        tmp_path: Path, tls: Tls, receiver: HttpsReceiver) -> None:
    out = output(tmp_path, tls, receiver, event_datasets=("sisguard.auth",), min_severity=40)
    try:
        low = Record(Kind.ALERT, "low", {"event": {"id": "low", "severity": 21}})
        fim = Record(Kind.EVENT, "a-1", {"event": {"dataset": "sisguard.fim",
                                                   "severity": 73}}, "a", 1)
        auth = Record(Kind.EVENT, "a-2", {"event": {"dataset": "sisguard.auth",
                                                    "severity": 47}}, "a", 2)
        out.publish([low, fim, auth, *alerts(1)])
        wait_for(lambda: len(receiver.taken) == 2, message="two records")
        assert sorted(receiver.taken) == ["a-2", "alert-0"]
        # a document without event.id gets its record id, so the receiver can dedupe
        assert receiver.documents["a-2"]["event"]["id"] == "a-2"
    finally:
        out.close()


def test_a_resent_batch_is_not_sent_twice(tmp_path: Path, tls: Tls,
                                          receiver: HttpsReceiver) -> None:
    out = output(tmp_path, tls, receiver)
    try:
        out.publish(alerts(5))
        wait_for(lambda: out.health()["delivered"] == 5, message="five delivered")
        assert out.publish(alerts(5)).outcomes == [Outcome.DUPLICATE] * 5
        out.publish(alerts(1, start=5))
        wait_for(lambda: len(receiver.taken) == 6, message="six")
        assert set(receiver.taken.values()) == {1}
    finally:
        out.close()


def test_token_file_errors_name_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "token"
    bad.write_bytes(b"")
    with pytest.raises(ConfigError, match=str(bad)):
        read_token(bad)
    with pytest.raises(ConfigError, match="cannot read"):
        read_token(tmp_path / "missing")
    with pytest.raises(TypeError, match="https"):
        HttpsConfig(url="http://soc/ingest")


def test_a_receiver_with_a_certificate_from_another_ca_gets_nothing(
        tmp_path: Path, tls: Tls, receiver: HttpsReceiver) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    config = HttpsConfig(url=receiver.url, ca=tls.other_ca, cert=tls.client_cert,
                         key=tls.client_key, token_file=token_file,
                         queue=QueueConfig(backoff_initial=Duration(0.05),
                                           backoff_max=Duration(0.1)))
    out = HttpsOutput("soc", config, OutputContext(data_dir=tmp_path / "data"))
    out.connect()
    try:
        out.publish(alerts(1))
        wait_for(lambda: "CERTIFICATE_VERIFY_FAILED" in out.health()["last_error"],
                 message="the certificate refused")
        assert receiver.requests == 0 and out.health()["queue_depth"] == 1
    finally:
        out.close()


def test_text_that_is_not_unicode_costs_nothing(tmp_path: Path, tls: Tls,
                                                receiver: HttpsReceiver) -> None:
    out = output(tmp_path, tls, receiver)
    try:
        odd = alerts(1, file={"path": "/var/www/\udcff.php"})
        assert out.publish(odd + alerts(1, start=1)).outcomes == [Outcome.STORED] * 2
        wait_for(lambda: len(receiver.taken) == 2, message="both, the odd one escaped")
        assert receiver.documents["alert-0"]["file"]["path"] == "/var/www/\udcff.php"
    finally:
        out.close()


def test_each_line_carries_the_collectors_id_not_the_documents(
        tmp_path: Path, tls: Tls, receiver: HttpsReceiver) -> None:
    out = output(tmp_path, tls, receiver)
    try:
        out.publish([Record(Kind.ALERT, "alert-9", {"event": {"id": "someone-else"}})])
        wait_for(lambda: receiver.taken, message="the alert")
        assert list(receiver.taken) == ["alert-9"]
    finally:
        out.close()
