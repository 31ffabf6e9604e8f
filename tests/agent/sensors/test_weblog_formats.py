"""Web log formats: every named format and format strings parse real lines; hostile
lines cost linear time and never raise; the documents carry only valid values."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.sensors.weblog_document import DocumentBuilder, parse_time
from agent.sensors.weblog_formats import (
    NAMED_FORMATS,
    FormatError,
    compile_format,
    compile_format_string,
)
from common.text import escape_bytes, unescape

COMBINED = ('203.0.113.5 - alice [01/Dec/2026:22:15:26 +0700] "GET /shop/item.PHP?id=7&x=1 '
            'HTTP/1.1" 200 612 "https://ref.example/" "Mozilla/5.0 (X11; Linux)"')


def doc_for(fmt: str, line: str) -> dict[str, Any]:
    compiled = compile_format(fmt)
    return DocumentBuilder(compiled, path="/var/log/x.log").document(line, compiled.parse(line))


def test_combined_gives_every_field() -> None:
    doc = doc_for("combined", COMBINED)
    assert doc["@timestamp"] == "2026-12-01T15:15:26.999999Z"   # the end of its second
    assert doc["source"] == {"ip": "203.0.113.5"}
    assert doc["user"] == {"name": "alice"}
    assert doc["url"] == {"original": "/shop/item.PHP?id=7&x=1", "path": "/shop/item.PHP",
                          "query": "id=7&x=1", "extension": "php"}
    assert doc["http"] == {"version": "1.1", "request": {"method": "GET",
                                                         "referrer": "https://ref.example/"},
                           "response": {"status_code": 200, "body": {"bytes": 612}}}
    assert doc["user_agent"] == {"original": "Mozilla/5.0 (X11; Linux)"}
    assert doc["event"]["category"] == ["web"] and doc["event"]["dataset"] == "sisguard.web"
    assert doc["event"]["original"] == COMBINED and doc["event"]["outcome"] == "success"
    assert "parse_error" not in doc["sisguard"]["web"]


def test_common_and_vhost_combined() -> None:
    doc = doc_for("common", '::1 - - [01/Dec/2026:22:15:26 +0000] "DELETE /a HTTP/1.0" 404 -')
    assert doc["source"] == {"ip": "::1"} and doc["http"]["response"] == {"status_code": 404}
    assert doc["event"]["outcome"] == "failure"
    doc = doc_for("vhost_combined", 'portal.gov:443 10.1.2.3 - - [01/Dec/2026:22:15:26 +0000] '
                  '"POST /login HTTP/2.0" 302 0 "-" "curl/8.5"')
    assert doc["destination"] == {"domain": "portal.gov"}
    assert doc["http"]["request"] == {"method": "POST"} and doc["http"]["version"] == "2.0"
    assert "referrer" not in doc["http"]["request"]  # "-" is no referrer


def test_apache_quoted_fields_keep_escaped_quotes() -> None:
    line = ('1.2.3.4 - - [01/Dec/2026:22:15:26 +0000] "GET /x HTTP/1.1" 200 1 "-" '
            '"evil \\" 200 999 \\"agent"')
    doc = doc_for("combined", line)
    assert doc["user_agent"]["original"] == 'evil \\" 200 999 \\"agent'
    assert doc["http"]["response"]["body"]["bytes"] == 1


def test_nginx_json_log() -> None:
    line = json.dumps({"time_local": "01/Dec/2026:22:15:26 +0000", "remote_addr": "10.0.0.1",
                       "request": "GET /api?q=1 HTTP/1.1", "status": 201,
                       "body_bytes_sent": "15", "http_user_agent": "k\u00e9\u0001",
                       "request_time": "0.250", "host": "api.example", "nested": {"a": 1}})
    doc = doc_for("json", line)
    assert doc["url"]["query"] == "q=1" and doc["http"]["response"]["status_code"] == 201
    assert doc["event"]["duration"] == 250_000_000
    assert doc["destination"] == {"domain": "api.example"}
    assert doc["sisguard"]["web"]["server"] == "nginx"
    assert doc_for("json", "[1, 2]")["sisguard"]["web"]["parse_error"] is True
    # nginx's escape=json passes bytes >= 0x80 through: invalid UTF-8 in a JSON line
    raw = b'{"request": "GET /a\xff\xfe.php HTTP/1.1", "http_user_agent": "\\\\x41\xc3"}'
    doc = doc_for("json", escape_bytes(raw))
    assert doc["url"]["path"] == "/a\\xff\\xfe.php" and doc["url"]["extension"] == "php"
    assert unescape(doc["user_agent"]["original"]) == b"\\x41\xc3"
    assert unescape(doc["event"]["original"]) == raw


def test_nginx_and_apache_format_strings() -> None:
    nginx = ('$remote_addr - $remote_user [$time_local] "$request" $status $body_bytes_sent '
             '"$http_referer" "$http_user_agent" $host $request_time')
    line = ('198.51.100.7 - - [01/Dec/2026:22:15:26 +0000] "GET /a.jsp HTTP/1.1" 200 10 "-" '
            '"sqlmap/1.7" shop.example 0.003')
    doc = doc_for(nginx, line)
    assert doc["url"]["extension"] == "jsp" and doc["destination"]["domain"] == "shop.example"
    assert doc["event"]["duration"] == 3_000_000
    assert doc["sisguard"]["web"] == {"format": "custom", "server": "nginx"}
    apache = '%h %l %u %t "%r" %>s %b "%{Referer}i" "%{User-agent}i" %v %D'
    line = ('198.51.100.7 - - [01/Dec/2026:22:15:26 +0000] "GET / HTTP/1.1" 200 10 "-" '
            '"Nikto/2.5" www.example 1500')
    doc = doc_for(apache, line)
    assert doc["user_agent"]["original"] == "Nikto/2.5"
    assert doc["destination"]["domain"] == "www.example"
    assert doc["event"]["duration"] == 1_500_000
    assert doc["sisguard"]["web"]["server"] == "apache"


@pytest.mark.parametrize("spec", ["no variables here", "$remote_addr$status", "%h%>s",
                                  "$a " * 100 + "x" * 5000])
def test_bad_format_strings_are_refused(spec: str) -> None:
    with pytest.raises(FormatError):
        compile_format_string(spec)


def test_error_logs() -> None:
    doc = doc_for("nginx_error", '2026/12/01 22:15:26 [error] 31#31: *9 open() "/srv/a.php" '
                  'failed (2: No such file or directory), client: 192.0.2.1, server: portal, '
                  'request: "GET /a.php?x=1 HTTP/1.1", host: "portal:8080"')
    assert doc["event"]["type"] == ["error"] and doc["log"]["level"] == "error"
    assert doc["source"] == {"ip": "192.0.2.1"} and doc["destination"] == {"domain": "portal"}
    assert doc["url"]["path"] == "/a.php" and doc["process"] == {"pid": 31}
    doc = doc_for("apache_error", "[Tue Dec 01 22:15:26.123456 2026] [php:error] "
                  "[pid 77:tid 88] [client 192.0.2.2:5555] PHP Fatal error: boom")
    assert doc["log"]["level"] == "error" and doc["source"] == {"ip": "192.0.2.2"}
    assert doc["message"] == "PHP Fatal error: boom"


def test_unparsed_and_hostile_values() -> None:
    doc = doc_for("combined", "\x16\x03\x01 not a log line")
    assert doc["sisguard"]["web"]["parse_error"] is True
    assert doc["message"] == doc["event"]["original"] == "\x16\x03\x01 not a log line"
    # a "client" that is no address (a proxy header, junk) is never put in source.ip
    doc = doc_for("combined", COMBINED.replace("203.0.113.5", "<script>"))
    assert doc["source"] == {"address": "<script>"}
    # an absurd status or size is not a number field
    doc = doc_for("combined", COMBINED.replace(" 200 612 ", " 2000 99999999999999999999 "))
    assert "http" not in doc or "response" not in doc["http"]
    # a request line that is not METHOD target HTTP/x is flagged, not split
    doc = doc_for("combined", COMBINED.replace("GET /shop/item.PHP?id=7&x=1 HTTP/1.1",
                                               "\\x16\\x03\\x01\\x02"))
    assert doc["sisguard"]["web"]["bad_request_line"] is True and "url" not in doc


def test_time_formats() -> None:
    assert parse_time("01/Dec/2026:00:00:00 -0130") == parse_time("01/Dec/2026:01:30:00 +0000")
    assert parse_time("2026-12-01T01:30:00+00:00") == parse_time("01/Dec/2026:01:30:00 +0000")
    for bad in ("", "01/Foo/2026:00:00:00 +0000", "99/Dec/2026:00:00:00 +0000", "x" * 30):
        assert parse_time(bad) is None


FORMATS = ["combined", "common", "vhost_combined", "json", "nginx_error", "apache_error",
           '$remote_addr [$time_local] "$request" $status "$http_user_agent"']


@settings(max_examples=300, deadline=None)
@given(raw=st.binary(max_size=2000), fmt=st.sampled_from(FORMATS))
def test_any_bytes_give_a_valid_document(raw: bytes, fmt: str) -> None:
    text = escape_bytes(raw.replace(b"\n", b" "))
    doc = doc_for(fmt, text)
    assert unescape(doc["event"]["original"]) == raw.replace(b"\n", b" ")
    json.dumps(doc).encode("utf-8")  # always encodable
    if "source" in doc and "ip" in doc["source"]:
        assert ":" in doc["source"]["ip"] or doc["source"]["ip"].count(".") == 3


_pieces = st.sampled_from(['"', "\\", " ", "[", "]", "-", "a", "1", ":", "\\\"", '" "',
                           "HTTP/1.1", "GET ", "%", "$"])


@settings(max_examples=300)
@given(st.lists(_pieces, max_size=400), st.sampled_from(FORMATS))
def test_structured_junk_never_raises(pieces: list[str], fmt: str) -> None:
    line = "".join(pieces)
    compiled = compile_format(fmt)
    fields = compiled.parse(line)
    assert fields is None or all(isinstance(v, str) for v in fields.values())


@pytest.mark.timeout(60)  # a catastrophic pattern would take hours on these, not seconds
@pytest.mark.parametrize("fmt", [*NAMED_FORMATS, "json", "nginx_error", "apache_error",
                                 '"$request" "$http_user_agent" "$http_referer"'])
def test_long_hostile_lines_parse_in_one_pass(fmt: str) -> None:
    # shapes that make a backtracking pattern explode: many near-matches of every
    # literal, unbalanced quotes, escapes at the end; 64 KiB each (the sensor's cut)
    n = 64 * 1024
    hostile = [
        '1 - - [' + "]" * n,
        '1 - - [01/Dec/2026:00:00:00 +0000] "' + '\\"' * (n // 2),
        '1 - - [01/Dec/2026:00:00:00 +0000] "GET / HTTP/1.1" 200 1 "' + '" "' * (n // 3),
        ("a " * (n // 2)),
        '"' + "a" * n, '1 - - [01/Dec/2026:00:00:00 +0000] "' + "a" * n + "\\",
        '"' + "a\\" * (n // 2), '"' + "\\\"" * (n // 2) + " x",
        "[" * n, '{"a":' * (n // 5), "\\" * n, '"' * n, "[x] " * (n // 4),
        "2026/12/01 00:00:00 [error] 1#1: " + ", client: " * (n // 10),
    ]
    compiled = compile_format(fmt)
    builder = DocumentBuilder(compiled, path="/x")
    for line in hostile:
        builder.document(line, compiled.parse(line))


def test_documents_are_valid_ecs() -> None:
    from tests.ecs import problems
    docs = [doc_for("combined", COMBINED), doc_for("combined", "junk"),
            doc_for("nginx_error", '2026/12/01 22:15:26 [error] 31#31: *9 open() "/a" failed, '
                    'client: 192.0.2.1, server: portal, request: "GET /a HTTP/1.1"'),
            doc_for("json", json.dumps({"remote_addr": "::1", "request": "GET / HTTP/1.1",
                                        "status": "200", "request_time": "0.1",
                                        "content_type": "text/html"}))]
    assert [p for d in docs for p in problems(d)] == []
