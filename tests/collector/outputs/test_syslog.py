"""RFC 5424 messages and RFC 6587 octet counting; hostile text stays inside one message."""

from __future__ import annotations

import json
import re
import socket
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from collector.outputs.cef import parse_cef
from collector.outputs.diskqueue import Item
from collector.outputs.forwarder import DeliveryFailed
from collector.outputs.registry import OutputContext, parse_outputs
from collector.outputs.syslog import (
    Payload,
    SyslogConfig,
    SyslogOutput,
    format_message,
    frame,
    header_token,
    syslog_level,
)
from common.errors import ConfigError
from common.yamlconf import Size

FORGED = "/a?x=1\n<13>1 2026-12-02T00:00:00Z web01 sisguard - alert - {\"forged\":1}|x=y"
HEADER = re.compile(rb"<(\d{1,3})>1 (\S+) (\S+) (\S+) (\S+) (\S+) (\S+) ")


def unframe(data: bytes) -> list[bytes]:
    """What a receiver that counts octets makes of a stream."""
    out = []
    while data:
        length, _, rest = data.partition(b" ")
        n = int(length)
        out.append(rest[:n])
        data = rest[n:]
    return out


def doc(url: str = FORGED, **extra: Any) -> dict[str, Any]:
    return {"event": {"kind": "alert", "id": "alert-1", "severity": 73},
            "host": {"name": "web 01\n"}, "url": {"original": url},
            "rule": {"id": "r1", "name": "Web attack"}, **extra}


def test_pri_levels_and_header_tokens() -> None:
    assert [syslog_level(s) for s in (99, 73, 47, 21, 1, None)] == [2, 3, 4, 5, 6, 6]
    assert header_token("web 01\n", 255) == "web?01?"
    assert header_token("", 255) == "-" and header_token(None, 255) == "-"
    assert header_token("ẞ" * 300, 10) == "?" * 10


@pytest.mark.parametrize("payload", [Payload.JSON, Payload.CEF])
def test_a_newline_in_an_attackers_url_forges_no_message(payload: Payload) -> None:
    config = SyslogConfig(host="h", payload=payload)
    stream = b"".join(frame(format_message(config, doc=doc(), doc_id="alert-1",
                                           kind="alerts", now=1764633600.25))
                      for _ in range(3))
    messages = unframe(stream)
    assert len(messages) == 3
    for message in messages:
        assert b"\n" not in message and b"\r" not in message
        head = HEADER.match(message)
        assert head is not None
        pri, stamp, host, app, _, msgid, sd = head.groups()
        assert (pri, host, app, msgid, sd) == (b"107", b"web?01?", b"sisguard", b"alert", b"-")
        assert stamp == b"2025-12-02T00:00:00.250000Z"
        body = message[head.end():].decode()
        if payload is Payload.JSON:
            assert json.loads(body)["url"]["original"] == FORGED
        else:
            header, ext = parse_cef(body)
            assert len(header) == 7 and ext["request"] == FORGED and "x" not in ext


def test_a_message_over_the_limit_becomes_a_summary_that_keeps_the_id() -> None:
    config = SyslogConfig(host="h", max_message_bytes=Size(2000))
    big = doc(url="/" + "a" * 5000)
    message = format_message(config, doc=big, doc_id="alert-1", kind="alerts", now=0)
    assert len(message) <= 2000
    body = json.loads(message[HEADER.match(message).end():])  # type: ignore[union-attr]
    assert body["event"]["id"] == "alert-1" and body["sisguard"]["export"]["truncated"]


@given(st.lists(st.text(max_size=60), min_size=1, max_size=5))
def test_octet_counting_splits_any_stream_back(texts: list[str]) -> None:
    config = SyslogConfig(host="h")
    stream = b"".join(frame(format_message(config, doc=doc(t), doc_id="i", kind="alerts",
                                           now=0)) for t in texts)
    bodies = [json.loads(m[HEADER.match(m).end():])["url"]["original"]  # type: ignore[union-attr]
              for m in unframe(stream)]
    assert bodies == texts


def test_config_is_checked_where_it_is_written(tmp_path: Path) -> None:
    errors: list[ConfigError] = []
    parse_outputs({"soc": {"type": "syslog", "host": "soc", "port": 0, "colour": 1}},
                  source="c.yml", errors=errors)
    assert any("outputs.soc" in str(e) for e in errors)
    spec, = parse_outputs({"soc": {"type": "syslog", "host": "soc", "payload": "cef",
                                   "cef": {"vendor": "V"},
                                   "filter": {"event_datasets": ["sisguard.fim"]}}},
                          source="c.yml")
    assert spec.config.payload is Payload.CEF and spec.config.cef.vendor == "V"


def item(i: int) -> Item:
    return Item(i, f"id-{i}", "alerts", json.dumps(doc()).encode())


def test_a_receiver_that_closed_the_connection_gets_nothing_counted_as_sent(
        tmp_path: Path) -> None:
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        out = SyslogOutput("soc", SyslogConfig(host="127.0.0.1", port=port),
                           OutputContext(data_dir=tmp_path))
        done = out.deliver([item(1)])
        peer, _ = server.accept()
        assert [i.id for i in done.taken] == ["id-1"]
        peer.settimeout(5)
        assert b"alert-1" in peer.recv(65536)
        peer.close()                  # the receiver goes away
        with pytest.raises(DeliveryFailed):
            # the FIN is seen before writing: a new connection, which nobody accepts
            server.close()
            out.deliver([item(2)])
        out.disconnect()


def test_tls_checks_the_receivers_certificate_and_name(tmp_path: Path) -> None:
    import ssl
    import threading

    from collector.outputs.syslog import SyslogTls
    from tests.collector.outputs.receivers import make_tls

    tls = make_tls(tmp_path / "tls", server_name="soc.test")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(str(tls.server_cert), str(tls.server_key))
    received: list[bytes] = []
    finished = threading.Event()   # a receiver keeps the connection open
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]

        def serve() -> None:
            for _ in range(3):
                conn, _ = server.accept()
                try:
                    with context.wrap_socket(conn, server_side=True) as peer:
                        peer.settimeout(5)
                        received.append(peer.recv(65536))
                        finished.wait(5)
                except (ssl.SSLError, OSError):
                    received.append(b"")

        thread = threading.Thread(target=serve, daemon=True)
        thread.start()

        def attempt(**keys: Any) -> bool:
            out = SyslogOutput("soc", SyslogConfig(host="127.0.0.1", port=port,
                                                   tls=SyslogTls(**keys)),
                               OutputContext(data_dir=tmp_path))
            try:
                return bool(out.deliver([item(1)]).taken)
            except DeliveryFailed:
                return False
            finally:
                out.disconnect()

        assert not attempt(ca=tls.other_ca, server_name="soc.test")   # unknown CA
        assert not attempt(ca=tls.ca, server_name="portal.test")      # wrong name
        assert attempt(ca=tls.ca, server_name="soc.test")
        finished.set()
        thread.join(timeout=5)
    assert received[:2] == [b"", b""] and b"alert-1" in received[2]


def test_a_missing_certificate_file_is_named(tmp_path: Path) -> None:
    from collector.outputs.syslog import SyslogTls

    missing = tmp_path / "soc-ca.pem"
    with pytest.raises(ConfigError, match=f"outputs.soc.tls: ca {missing}"):
        SyslogOutput("soc", SyslogConfig(host="h", tls=SyslogTls(ca=missing)),
                     OutputContext(data_dir=tmp_path))
