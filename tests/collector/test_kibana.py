"""Kibana saved objects (deploy/kibana) and ``sisguard-collector kibana import``.

No Kibana here: the objects are checked against our index template, and the import
command talks to a local HTTP server that records what it was sent.
"""

from __future__ import annotations

import base64
import copy
import email.parser
import importlib.util
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from collector import cli
from collector.kibana import (
    INDEX_REF,
    TYPES,
    KibanaTarget,
    indexed_fields,
    kql_fields,
    load_ndjson,
    problems,
)
from collector.outputs.es_fields import ALL_FIELDS
from collector.tenants_sync import space_body
from common.errors import SisguardError

ROOT = Path(__file__).resolve().parents[2]
NDJSON = ROOT / "deploy" / "kibana" / "sisguard.ndjson"
SECRET_KEY = "c2lzZ3VhcmQtaWQ6c3VwZXItc2VjcmV0LWtleQ=="


def _load_build() -> ModuleType:
    spec = importlib.util.spec_from_file_location("kibana_build", NDJSON.parent / "build.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


BUILD = _load_build()


def _objects() -> list[dict[str, Any]]:
    return load_ndjson(NDJSON.read_bytes(), source=str(NDJSON))


def _by_id(objects: list[dict[str, Any]], object_id: str) -> dict[str, Any]:
    return next(obj for obj in objects if obj["id"] == object_id)


# ------------------------------------------------------------------ the file


def test_committed_file_is_what_the_generator_makes_now() -> None:
    assert NDJSON.read_text(encoding="utf-8") == BUILD.render(BUILD.build()), \
        "deploy/kibana/sisguard.ndjson is stale: run deploy/kibana/build.py"
    assert BUILD.main(["--check", "--output", str(NDJSON)]) == 0


def test_check_mode_notices_a_stale_file(tmp_path: Path) -> None:
    stale = tmp_path / "sisguard.ndjson"
    stale.write_text(NDJSON.read_text(encoding="utf-8").replace("sisguard: overview", "old"))
    assert BUILD.main(["--check", "--output", str(stale)]) == 1


def test_every_line_is_a_saved_object_with_unique_id_and_resolving_references() -> None:
    lines = NDJSON.read_text(encoding="utf-8").splitlines()
    assert lines and all(line.strip() for line in lines)
    objects = [json.loads(line) for line in lines]
    ids = [(obj["type"], obj["id"]) for obj in objects]
    assert len(set(ids)) == len(ids)
    assert len({obj["id"] for obj in objects}) == len(objects)  # ids unique across types too
    for obj in objects:
        assert obj["type"] in TYPES
        assert set(obj) >= {"type", "id", "attributes", "references", "coreMigrationVersion",
                            "typeMigrationVersion"}
        assert obj["coreMigrationVersion"].startswith("8.")
        for ref in obj["references"]:
            assert (ref["type"], ref["id"]) in ids, f"{obj['id']}: dangling {ref}"


def test_the_objects_the_issue_asks_for() -> None:
    objects = _objects()
    views = {obj["attributes"]["title"]: obj for obj in objects if obj["type"] == "index-pattern"}
    assert set(views) == {"sisguard-events-*", "sisguard-alerts-*"}
    assert all(v["attributes"]["timeFieldName"] == "@timestamp" for v in views.values())
    queries = {obj["id"]: json.loads(obj["attributes"]["kibanaSavedObjectMeta"]
                                     ["searchSourceJSON"])["query"]["query"]
               for obj in objects if obj["type"] == "search"}
    assert queries == {
        "sisguard-file-changes": 'event.dataset: "sisguard.fim"',
        "sisguard-failed-logins":
            'event.category: "authentication" and event.outcome: "failure"',
        "sisguard-new-listening-ports": 'event.action: "listen_opened"',
        "sisguard-alerts-by-severity": 'event.kind: "alert"',
        "sisguard-agent-health": 'event.dataset: "sisguard.agent"',
    }
    alerts = _by_id(objects, "sisguard-alerts-by-severity")
    assert alerts["attributes"]["sort"][0] == ["event.severity", "desc"]
    assert alerts["references"] == [{"id": "sisguard-alerts", "name": INDEX_REF,
                                     "type": "index-pattern"}]
    dashboards = [obj for obj in objects if obj["type"] == "dashboard"]
    assert len(dashboards) == 1
    panels = json.loads(dashboards[0]["attributes"]["panelsJSON"])
    names = {ref["name"]: ref["id"] for ref in dashboards[0]["references"]}
    shown = {names[f"{p['panelIndex']}:{p['panelRefName']}"] for p in panels}
    assert shown >= {"sisguard-alerts-over-time", "sisguard-top-rules", "sisguard-top-hosts",
                     "sisguard-file-changes-by-host", "sisguard-failed-logins-by-source"}
    over_time = json.loads(_by_id(objects, "sisguard-alerts-over-time")
                           ["attributes"]["visState"])
    assert [(a["type"], a["params"].get("field")) for a in over_time["aggs"]] == [
        ("count", None), ("date_histogram", "@timestamp"), ("terms", "sisguard.alert.level")]
    by_source = json.loads(_by_id(objects, "sisguard-failed-logins-by-source")
                           ["attributes"]["visState"])
    assert ("terms", "source.ip") in [(a["type"], a["params"].get("field"))
                                      for a in by_source["aggs"]]


# ------------------------------------------------------------------ fields


def test_every_field_used_exists_with_a_type_its_use_accepts() -> None:
    assert problems(_objects()) == []


def test_fields_are_those_of_the_index_template() -> None:
    fields = indexed_fields()
    assert {name: kind for name, kind in fields.items() if name in ALL_FIELDS
            and kind != "unindexed"} == {name: kind for name, kind in ALL_FIELDS.items()
                                         if kind not in ("object", "stored")
                                         and name != "sisguard.deadletter.document"}
    assert fields["message.keyword"] == "keyword"
    assert fields["file.path.text"] == "text"
    assert fields["sisguard.deadletter.document"] == "unindexed"


def test_every_named_field_is_in_all_fields_independently_of_the_checker() -> None:
    """A second, plain look at the fields, so a bug in problems() cannot hide one."""
    named: set[str] = set()
    for obj in _objects():
        attributes = obj["attributes"]
        if obj["type"] == "index-pattern":
            named.add(attributes["timeFieldName"])
            continue
        if obj["type"] == "dashboard":
            continue
        source = json.loads(attributes["kibanaSavedObjectMeta"]["searchSourceJSON"])
        named.update(kql_fields(source["query"]["query"]))
        if obj["type"] == "search":
            named.update(attributes["columns"])
            named.update(f for f, _ in attributes["sort"])
            assert all(ALL_FIELDS[f] != "text" for f, _ in attributes["sort"])
        else:
            for agg in json.loads(attributes["visState"])["aggs"]:
                if "field" in agg["params"]:
                    named.add(agg["params"]["field"])
                    expected = {"terms": {"keyword", "ip", "long", "boolean"},
                                "date_histogram": {"date"}}.get(agg["type"])
                    if expected:
                        assert ALL_FIELDS[agg["params"]["field"]] in expected, agg
    assert named - ALL_FIELDS.keys() == set()
    assert {"event.severity", "source.ip", "sisguard.alert.level"} <= named


@pytest.mark.parametrize(("query", "fields"), [
    ('event.dataset: "sisguard.fim"', ["event.dataset"]),
    ('a.b: "x: y" and not (c : 1 or d:*)', ["a.b", "c", "d"]),
    ("event.severity >= 73 and @timestamp < now", ["event.severity", "@timestamp"]),
    ('message: "user: root"', ["message"]),
])
def test_kql_fields(query: str, fields: list[str]) -> None:
    assert kql_fields(query) == fields


def _vis_with(objects: list[dict[str, Any]], object_id: str, index: int,
              **params: Any) -> list[dict[str, Any]]:
    objects = copy.deepcopy(objects)
    attributes = _by_id(objects, object_id)["attributes"]
    vis = json.loads(attributes["visState"])
    vis["aggs"][index]["params"].update(params)
    attributes["visState"] = json.dumps(vis)
    return objects


def test_checker_catches_terms_on_text_a_missing_field_and_histogram_on_keyword() -> None:
    objects = _objects()
    assert problems(_vis_with(objects, "sisguard-top-rules", 3, field="message")) == [
        "visualization/sisguard-top-rules: terms aggregation field 'message' is text, "
        "which needs one of ['boolean', 'ip', 'keyword', 'long']"]
    assert problems(_vis_with(objects, "sisguard-top-rules", 3, field="rule.nmae")) == [
        "visualization/sisguard-top-rules: terms aggregation field 'rule.nmae' is not in "
        "the index template"]
    found = problems(_vis_with(objects, "sisguard-alerts-over-time", 1, field="host.name"))
    assert len(found) == 1 and "date_histogram aggregation field 'host.name' is keyword" \
        in found[0]
    # a multi-field of the template is fine
    assert problems(_vis_with(objects, "sisguard-top-rules", 3, field="message.keyword")) == []


def test_checker_catches_bad_columns_sort_query_and_time_field() -> None:
    objects = copy.deepcopy(_objects())
    search = _by_id(objects, "sisguard-failed-logins")["attributes"]
    search["columns"].append("user.nmae")
    search["sort"] = [["message", "desc"]]
    meta = search["kibanaSavedObjectMeta"]
    meta["searchSourceJSON"] = meta["searchSourceJSON"].replace("event.outcome", "outcome")
    _by_id(objects, "sisguard-events")["attributes"]["timeFieldName"] = "event.action"
    found = problems(objects)
    assert any("column 'user.nmae' is not in the index template" in p for p in found)
    assert any("sort field 'message' is text" in p for p in found)
    assert any("query field 'outcome' is not in the index template" in p for p in found)
    assert any("index-pattern/sisguard-events: time field 'event.action' is keyword" in p
               for p in found)
    assert len(found) == 4


def test_checker_catches_dangling_references_duplicates_and_unknown_types() -> None:
    objects = copy.deepcopy(_objects())
    objects = [obj for obj in objects if obj["id"] != "sisguard-top-hosts"]
    objects.append(copy.deepcopy(objects[0]))
    objects.append({"type": "canvas-workpad", "id": "x", "attributes": {}, "references": []})
    found = problems(objects)
    assert "index-pattern/sisguard-events: duplicate id" in found
    assert any(p.startswith("canvas-workpad/x: type 'canvas-workpad' is not one of")
               for p in found)
    assert any(p.startswith("dashboard/sisguard-overview: reference '3:panel_3' to "
                            "visualization/sisguard-top-hosts is not in the file") for p in found)


def test_checker_reads_lens_columns() -> None:
    lens = {"type": "lens", "id": "l", "references": [], "attributes": {"state": {
        "datasourceStates": {"formBased": {"layers": {"a": {"columns": {
            "1": {"operationType": "count", "sourceField": "___records___"},
            "2": {"operationType": "terms", "sourceField": "error.message"},
            "3": {"operationType": "date_histogram", "sourceField": "@timestamp"},
            "4": {"operationType": "unique_count", "sourceField": "nope"}}}}}}}}}
    assert problems([lens]) == [
        "lens/l: lens terms field 'error.message' is text, which needs one of "
        "['boolean', 'ip', 'keyword', 'long']",
        "lens/l: lens unique_count field 'nope' is not in the index template"]


def test_a_broken_line_is_reported_with_its_number() -> None:
    with pytest.raises(SisguardError) as caught:
        load_ndjson(b'{"type": "search"}\n\n{"type": \n', source="x.ndjson")
    assert str(caught.value).startswith("x.ndjson:3:")


# ------------------------------------------------------------------ import


@dataclass
class Recorded:
    method: str
    path: str
    headers: Message
    body: bytes


@dataclass
class FakeKibana:
    url: str
    requests: list[Recorded] = field(default_factory=list)
    status: int = 200
    answer: dict[str, Any] = field(default_factory=dict)
    status_for: dict[str, int] = field(default_factory=dict)   # by method, over status


@pytest.fixture
def kibana() -> Iterator[FakeKibana]:
    fake = FakeKibana(url="")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            fake.requests.append(Recorded(self.command, self.path, self.headers, body))
            payload = json.dumps(fake.answer).encode()
            self.send_response(fake.status_for.get(self.command, fake.status))
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        do_PUT = do_POST

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, name="fake-kibana", daemon=True)
    thread.start()
    fake.url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield fake
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
        assert not thread.is_alive(), "the fake Kibana thread did not stop"


def _form_fields(request: Recorded) -> dict[str, tuple[str | None, bytes]]:
    """Field name -> (filename, bytes), parsed back by the email package."""
    content_type = request.headers["Content-Type"]
    assert content_type.startswith("multipart/form-data; boundary=")
    message = email.parser.BytesParser().parsebytes(
        f"Content-Type: {content_type}\r\n\r\n".encode() + request.body)
    assert message.is_multipart() and not message.defects
    parts: dict[str, tuple[str | None, bytes]] = {}
    for part in message.get_payload():
        assert isinstance(part, Message)
        name = part.get_param("name", header="content-disposition")
        payload = part.get_payload(decode=True)
        assert isinstance(name, str) and isinstance(payload, bytes)
        parts[name] = (part.get_filename(), payload)
    return parts


def test_import_posts_the_file_as_multipart_with_api_key_to_the_space(
        kibana: FakeKibana, capsys: pytest.CaptureFixture[str]) -> None:
    kibana.answer = {"success": True, "successCount": 12, "successResults": []}
    code = cli.main(["kibana", "import", "--url", kibana.url + "/", "--space", "sec ops",
                     "--api-key", SECRET_KEY])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "imported 12 saved objects" in out and "'sec ops'" in out
    assert SECRET_KEY not in out + err
    [request] = kibana.requests
    assert request.method == "POST"
    assert request.path == "/s/sec%20ops/api/saved_objects/_import?overwrite=true"
    assert request.headers["kbn-xsrf"] == "true"
    assert request.headers["Authorization"] == f"ApiKey {SECRET_KEY}"
    assert _form_fields(request) == {"file": ("sisguard.ndjson", NDJSON.read_bytes())}


def test_import_with_basic_auth_a_chosen_file_and_no_space(
        kibana: FakeKibana, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    chosen = tmp_path / "acme.ndjson"
    # CRLF line ends and a boundary-like string must come through untouched
    first, second = NDJSON.read_bytes().splitlines()[:2]
    chosen.write_bytes(first + b"\r\n" + second.replace(b"sisguard alerts", b"--x--")
                       + b"\r\n")
    kibana.answer = {"success": True, "successCount": 1}
    code = cli.main(["kibana", "import", "--url", kibana.url, "--user", "elastic",
                     "--password", "pa:ss word", "--file", str(chosen)])
    out, err = capsys.readouterr()
    assert code == 0, err
    [request] = kibana.requests
    assert request.path == "/api/saved_objects/_import?overwrite=true"
    expected = base64.b64encode(b"elastic:pa:ss word").decode()
    assert request.headers["Authorization"] == f"Basic {expected}"
    assert _form_fields(request)["file"][1] == chosen.read_bytes()
    assert "pa:ss word" not in out + err


def test_a_raw_id_colon_key_api_key_is_sent_base64_encoded(kibana: FakeKibana) -> None:
    kibana.answer = {"success": True, "successCount": 12}
    assert cli.main(["kibana", "import", "--url", kibana.url, "--api-key", "id1:k3y"]) == 0
    assert kibana.requests[0].headers["Authorization"] == "ApiKey " + base64.b64encode(
        b"id1:k3y").decode()


def test_an_http_error_exits_non_zero_with_kibanas_message(
        kibana: FakeKibana, capsys: pytest.CaptureFixture[str]) -> None:
    kibana.status = 400
    kibana.answer = {"statusCode": 400, "error": "Bad Request",
                     "message": "Unsupported file extension .txt", "success": False}
    code = cli.main(["kibana", "import", "--url", kibana.url, "--api-key", SECRET_KEY])
    out, err = capsys.readouterr()
    assert code != 0
    assert "HTTP 400" in err and "Unsupported file extension .txt" in err
    assert SECRET_KEY not in out + err


def test_an_import_with_errors_exits_non_zero_listing_them(
        kibana: FakeKibana, capsys: pytest.CaptureFixture[str]) -> None:
    kibana.answer = {"success": False, "successCount": 11, "errors": [
        {"id": "sisguard-top-rules", "type": "visualization", "title": "sisguard: top rules",
         "error": {"type": "missing_references",
                   "references": [{"type": "index-pattern", "id": "sisguard-alerts"}]}}]}
    code = cli.main(["kibana", "import", "--url", kibana.url, "--api-key", SECRET_KEY])
    out, err = capsys.readouterr()
    assert code == 1
    assert out == ""
    assert "import failed: 11 saved objects imported, 1 errors: visualization/" \
           "sisguard-top-rules: missing_references (missing index-pattern/sisguard-alerts)" \
           in err


def test_an_unreachable_kibana_and_credentials_in_the_url_are_clear_errors(
        capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["kibana", "import", "--url", "http://127.0.0.1:1"]) == 2
    assert "cannot reach Kibana at http://127.0.0.1:1" in capsys.readouterr().err
    assert cli.main(["kibana", "import", "--url", "http://u:secret@127.0.0.1:1"]) == 2
    err = capsys.readouterr().err
    assert "not in --url" in err and "secret" not in err


# ------------------------------------------------------------------ tenants


def test_a_space_is_created_or_when_it_exists_updated(kibana: FakeKibana) -> None:
    target = KibanaTarget(kibana.url, api_key=SECRET_KEY)
    space = space_body("sg-org-syt", "Sở Y tế")
    assert target.put_space(space) == "created"
    kibana.status_for = {"POST": 409}
    assert target.put_space(space) == "updated"
    assert [(r.method, r.path) for r in kibana.requests] == [
        ("POST", "/api/spaces/space"), ("POST", "/api/spaces/space"),
        ("PUT", "/api/spaces/space/sg-org-syt")]
    assert json.loads(kibana.requests[-1].body) == space
    assert SECRET_KEY not in repr(target)
    kibana.status_for = {"POST": 403, "PUT": 403}
    with pytest.raises(SisguardError, match="HTTP 403 to the creation of space 'sg-org-syt'"):
        target.put_space(space)
