"""Kibana saved objects: check them against our index template, import them into Kibana.

The objects themselves (data views, saved searches, visualizations, a dashboard) are
written by ``deploy/kibana/build.py`` into ``deploy/kibana/sisguard.ndjson``, the NDJSON
format of Kibana's saved objects export/import API (Kibana 8.8 or newer).

``problems()`` checks a list of saved objects without a Kibana: every reference resolves
to an object in the list, and every field a data view, search or visualization names is
in our index template with a type that use can work with (a ``terms`` aggregation on a
``text`` field fails in Kibana only when somebody opens the dashboard).

``sisguard-collector kibana import`` posts the file to ``/api/saved_objects/_import``;
``KibanaTarget`` also makes spaces (``tenants sync``: collector/tenants_sync.py).
"""

from __future__ import annotations

import argparse
import base64
import getpass
import json
import os
import re
import secrets
import ssl
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from collector.outputs.es_fields import properties
from common.errors import Location, SisguardError

TYPES = frozenset({"index-pattern", "search", "visualization", "lens", "dashboard"})
INDEX_REF = "kibanaSavedObjectMeta.searchSourceJSON.index"
API_KEY_ENV = "SISGUARD_KIBANA_API_KEY"
PASSWORD_ENV = "SISGUARD_KIBANA_PASSWORD"

# What each use of a field accepts, by Elasticsearch type. Anything else is a problem:
# the checker fails closed on an aggregation it does not know.
_NUMERIC = frozenset({"long", "float"})
_AGG_TYPES: dict[str, frozenset[str]] = {
    "terms": frozenset({"keyword", "ip", "long", "boolean"}),
    "significant_terms": frozenset({"keyword", "ip", "long", "boolean"}),
    "date_histogram": frozenset({"date"}),
    "histogram": _NUMERIC,
    "cardinality": frozenset({"keyword", "ip", "long", "float", "boolean", "date"}),
    "min": _NUMERIC | {"date"}, "max": _NUMERIC | {"date"},
    "avg": _NUMERIC, "sum": _NUMERIC, "median": _NUMERIC, "percentiles": _NUMERIC,
}
_LENS_OPERATIONS = {"unique_count": "cardinality", "average": "avg"}
_SORTABLE = frozenset({"keyword", "ip", "long", "float", "boolean", "date"})
_SEARCHABLE = _SORTABLE | {"text"}
_QUOTED = re.compile(r'"(?:[^"\\]|\\.)*"')
_KQL_FIELD = re.compile(r"([A-Za-z_@][\w.@-]*)\s*(?::|<=|>=|<|>)")


# --------------------------------------------------------------------------- checking

def indexed_fields() -> dict[str, str]:
    """Every field name of the index template (multi-fields too) -> its type.

    Fields Kibana cannot search or aggregate come out as ``unindexed``.
    """
    flat: dict[str, str] = {}

    def walk(node: Mapping[str, Any], prefix: str) -> None:
        for name, mapping in node.items():
            full = prefix + name
            if "properties" in mapping:
                walk(mapping["properties"], full + ".")
                continue
            usable = mapping.get("index", True) and mapping.get("enabled", True)
            flat[full] = mapping["type"] if usable and mapping["type"] != "object" \
                else "unindexed"
            for sub, submapping in mapping.get("fields", {}).items():
                flat[f"{full}.{sub}"] = submapping["type"]

    walk(properties(), "")
    return flat


def kql_fields(query: str) -> list[str]:
    """The field names a KQL query names (``field: value``, ``field >= value``)."""
    return _KQL_FIELD.findall(_QUOTED.sub('""', query))


def load_ndjson(data: bytes, *, source: str) -> list[dict[str, Any]]:
    """Parse an NDJSON file of saved objects; an error names the line."""
    objects: list[dict[str, Any]] = []
    for number, line in enumerate(data.decode("utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise SisguardError(f"not JSON: {e.msg}",
                                location=Location(source, number, e.colno)) from e
        if not isinstance(obj, dict):
            raise SisguardError("not a JSON object", location=Location(source, number))
        objects.append(obj)
    return objects


def problems(objects: list[dict[str, Any]],
             fields: Mapping[str, str] | None = None) -> list[str]:
    """Every problem found, each naming the object (``type/id``); empty when all is well."""
    fields = indexed_fields() if fields is None else fields
    found: list[str] = []
    known: set[tuple[str, str]] = set()
    for obj in objects:
        key = (str(obj.get("type")), str(obj.get("id")))
        if key[0] not in TYPES:
            found.append(f"{key[0]}/{key[1]}: type {key[0]!r} is not one of {sorted(TYPES)}")
        if key in known:
            found.append(f"{key[0]}/{key[1]}: duplicate id")
        known.add(key)
    for obj in objects:
        where = f"{obj.get('type')}/{obj.get('id')}"
        try:
            found += [f"{where}: {p}" for p in _object_problems(obj, known, fields)]
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            found.append(f"{where}: malformed ({type(e).__name__}: {e})")
    return found


def _object_problems(obj: dict[str, Any], known: set[tuple[str, str]],
                     fields: Mapping[str, str]) -> Iterator[str]:
    refs = {ref["name"]: ref for ref in obj.get("references", [])}
    for ref in refs.values():
        if (ref["type"], ref["id"]) not in known:
            yield f"reference {ref['name']!r} to {ref['type']}/{ref['id']} is not in the file"
    attributes = obj["attributes"]

    def use(field: str, allowed: frozenset[str], what: str) -> Iterator[str]:
        return _use(fields, field, allowed, what)

    if obj["type"] == "index-pattern":
        yield from use(attributes["timeFieldName"], frozenset({"date"}), "time field")
        for field in json.loads(attributes.get("fieldFormatMap") or "{}"):
            yield from use(field, _SEARCHABLE, "formatted field")
        return
    if obj["type"] == "dashboard":
        for panel in json.loads(attributes["panelsJSON"]):
            name = f"{panel['panelIndex']}:{panel['panelRefName']}"
            if name not in refs:
                yield f"panel {panel['panelIndex']} names reference {name!r}, which is missing"
            elif refs[name]["type"] != panel["type"]:
                yield f"panel {panel['panelIndex']} is a {panel['type']}, its reference not"
        return
    if obj["type"] == "lens":
        yield from _lens_problems(attributes, fields)
        return
    source = json.loads(attributes["kibanaSavedObjectMeta"]["searchSourceJSON"])
    if source.get("indexRefName") != INDEX_REF or refs.get(INDEX_REF, {}).get("type") \
            != "index-pattern":
        yield f"searchSourceJSON must name the data view through {INDEX_REF!r}"
    query = source.get("query", {})
    if query.get("language") != "kuery":
        yield f"query language is {query.get('language')!r}, not kuery"
    for field in kql_fields(query.get("query", "")):
        yield from use(field, _SEARCHABLE, "query field")
    if obj["type"] == "search":
        for field in attributes["columns"]:
            yield from use(field, _SEARCHABLE, "column")
        for field, _direction in attributes.get("sort", []):
            yield from use(field, _SORTABLE, "sort field")
        return
    vis = json.loads(attributes["visState"])
    for agg in vis["aggs"]:
        field = agg.get("params", {}).get("field")
        if field is not None:
            allowed = _AGG_TYPES.get(agg["type"], frozenset())
            yield from use(field, allowed, f"{agg['type']} aggregation field")


def _use(fields: Mapping[str, str], field: str, allowed: frozenset[str],
         what: str) -> Iterator[str]:
    kind = fields.get(field)
    if kind is None:
        yield f"{what} {field!r} is not in the index template"
    elif kind not in allowed:
        yield f"{what} {field!r} is {kind}, which needs one of {sorted(allowed)}"


def _lens_problems(attributes: dict[str, Any], fields: Mapping[str, str]) -> Iterator[str]:
    layers = attributes["state"]["datasourceStates"].get("formBased", {}).get("layers", {})
    for layer in layers.values():
        for column in layer["columns"].values():
            field, operation = column.get("sourceField"), column["operationType"]
            if field in (None, "___records___"):
                continue
            allowed = _AGG_TYPES.get(_LENS_OPERATIONS.get(operation, operation), frozenset())
            yield from _use(fields, field, allowed, f"lens {operation} field")


# --------------------------------------------------------------------------- importing

def default_file() -> Path:
    """``deploy/kibana/sisguard.ndjson`` of the source tree this module runs from."""
    return Path(__file__).resolve().parents[1] / "deploy" / "kibana" / "sisguard.ndjson"


def multipart(field: str, filename: str, content: bytes) -> tuple[bytes, str]:
    """A multipart/form-data body with one file, and its Content-Type header."""
    boundary = f"sisguard-{secrets.token_hex(16)}"
    while boundary.encode() in content:  # pragma: no cover - 128 random bits
        boundary = f"sisguard-{secrets.token_hex(16)}"
    head = (f"--{boundary}\r\n"
            f'Content-Disposition: form-data; name="{field}"; filename="{filename}"\r\n'
            "Content-Type: application/ndjson\r\n\r\n")
    body = head.encode() + content + f"\r\n--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


@dataclass(frozen=True)
class KibanaTarget:
    """A Kibana to talk to: base URL (checked) and credentials (never in a repr)."""

    url: str
    api_key: str | None = field(default=None, repr=False)
    user: str | None = None
    password: str | None = field(default=None, repr=False)
    ca: str | None = None
    timeout: float = 60.0

    def __post_init__(self) -> None:
        parts = urllib.parse.urlsplit(self.url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise SisguardError(f"--url must be http(s)://HOST[:PORT][/BASE], not {self.url!r}")
        if parts.username or parts.password:
            raise SisguardError("put credentials in --api-key or --user/--password, not in "
                                "--url")

    @property
    def where(self) -> str:
        parts = urllib.parse.urlsplit(self.url)
        return urllib.parse.urlunsplit((parts.scheme, parts.netloc, parts.path.rstrip("/"),
                                        "", ""))

    def request(self, method: str, api_path: str, body: bytes, content_type: str, *,
                space: str | None = None, query: str = "") -> tuple[int, bytes]:
        """(HTTP status, body) of one call; 4xx/5xx come back, unreachable raises."""
        parts = urllib.parse.urlsplit(self.url)
        path = parts.path.rstrip("/")
        if space and space != "default":
            path += f"/s/{urllib.parse.quote(space, safe='')}"
        endpoint = urllib.parse.urlunsplit(
            (parts.scheme, parts.netloc, path + api_path, query, ""))
        headers = {"kbn-xsrf": "true", "Content-Type": content_type,
                   "Accept": "application/json"}
        if self.api_key:
            # an Elasticsearch API key is "id:key" raw, or its base64 ("encoded") form
            encoded = (base64.b64encode(self.api_key.encode()).decode() if ":" in self.api_key
                       else self.api_key)
            headers["Authorization"] = f"ApiKey {encoded}"
        elif self.user is not None:
            basic = base64.b64encode(f"{self.user}:{self.password or ''}".encode()).decode()
            headers["Authorization"] = f"Basic {basic}"
        context = None
        if parts.scheme == "https":
            try:
                context = ssl.create_default_context(cafile=self.ca)
            except (OSError, ssl.SSLError) as e:
                raise SisguardError(f"cannot use CA file {self.ca}: {e}") from e
        request = urllib.request.Request(endpoint, data=body, headers=headers, method=method)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout,
                                        context=context) as response:
                return int(response.status), bytes(response.read())
        except urllib.error.HTTPError as e:
            return int(e.code), bytes(e.read())
        except (urllib.error.URLError, OSError) as e:
            reason = e.reason if isinstance(e, urllib.error.URLError) else e
            raise SisguardError(f"cannot reach Kibana at {self.where}: {reason}") from e

    def answer(self, status: int, raw: bytes, what: str) -> dict[str, Any]:
        if status >= 300:
            raise SisguardError(f"Kibana at {self.where} answered HTTP {status} to {what}: "
                                f"{_kibana_message(raw)}")
        try:
            answer = json.loads(raw)
        except ValueError as e:
            raise SisguardError(f"Kibana at {self.where} answered {what} with something not "
                                f"JSON: {raw[:200]!r}") from e
        if not isinstance(answer, dict):
            raise SisguardError(f"Kibana at {self.where} answered {what} with {raw[:200]!r}")
        return answer

    def import_objects(self, ndjson: bytes, *, space: str | None = None) -> dict[str, Any]:
        """POST the objects (overwriting objects with the same ids); Kibana's answer."""
        body, content_type = multipart("file", "sisguard.ndjson", ndjson)
        status, raw = self.request("POST", "/api/saved_objects/_import", body, content_type,
                                   space=space, query="overwrite=true")
        answer = self.answer(status, raw, "the import")
        if "success" not in answer:
            raise SisguardError(f"Kibana at {self.where} answered without 'success': "
                                f"{raw[:200]!r}")
        return answer

    def put_space(self, space: Mapping[str, Any]) -> str:
        """Make the space, or update it when it exists: 'created' or 'updated'."""
        body = json.dumps(space).encode()
        status, raw = self.request("POST", "/api/spaces/space", body, "application/json")
        if status == 409:
            quoted = urllib.parse.quote(str(space["id"]), safe="")
            status, raw = self.request("PUT", f"/api/spaces/space/{quoted}", body,
                                       "application/json")
            self.answer(status, raw, f"the update of space {space['id']!r}")
            return "updated"
        self.answer(status, raw, f"the creation of space {space['id']!r}")
        return "created"


def import_saved_objects(ndjson: bytes, *, url: str, space: str | None = None,
                         api_key: str | None = None, user: str | None = None,
                         password: str | None = None, ca: str | None = None,
                         timeout: float = 60.0) -> dict[str, Any]:
    """POST the objects to Kibana (overwriting objects with the same ids); its answer."""
    target = KibanaTarget(url, api_key=api_key, user=user, password=password, ca=ca,
                          timeout=timeout)
    return target.import_objects(ndjson, space=space)


def _kibana_message(raw: bytes) -> str:
    try:
        answer = json.loads(raw)
    except ValueError:
        return raw.decode("utf-8", "replace").strip()[:500] or "(no body)"
    if isinstance(answer, dict) and answer.get("message"):
        return str(answer["message"])
    return json.dumps(answer)[:500]


def summary(answer: Mapping[str, Any]) -> str:
    """One line from Kibana's import answer."""
    count = answer.get("successCount", 0)
    if answer.get("success"):
        return f"imported {count} saved objects"
    errors = []
    for item in answer.get("errors", []):
        error = item.get("error", {})
        detail = error.get("type", "unknown")
        if error.get("message"):
            detail += f" ({error['message']})"
        if error.get("references"):
            detail += " (missing " + ", ".join(f"{r.get('type')}/{r.get('id')}"
                                               for r in error["references"]) + ")"
        errors.append(f"{item.get('type')}/{item.get('id')}: {detail}")
    return (f"import failed: {count} saved objects imported, {len(errors)} errors: "
            + "; ".join(errors))


def import_command(args: argparse.Namespace) -> int:
    """``sisguard-collector kibana import``."""
    path = Path(args.file) if args.file else default_file()
    try:
        ndjson = path.read_bytes()
    except OSError as e:
        raise SisguardError(f"cannot read {path}: {e.strerror}; name the file with --file") from e
    load_ndjson(ndjson, source=str(path))  # a broken file fails here, naming the line
    if args.user is not None and args.api_key:
        raise SisguardError("give either --api-key or --user/--password, not both")
    api_key = args.api_key or (os.environ.get(API_KEY_ENV) if args.user is None else None)
    password = args.password or os.environ.get(PASSWORD_ENV)
    if args.user is not None and password is None and sys.stdin.isatty():
        password = getpass.getpass(f"Kibana password for {args.user}: ")
    answer = import_saved_objects(ndjson, url=args.url, space=args.space, api_key=api_key,
                                  user=args.user, password=password, ca=args.ca)
    line = summary(answer)
    if not answer.get("success"):
        print(f"sisguard-collector: {line}", file=sys.stderr)
        return 1
    space = args.space or "default"
    print(f"{line} from {path} into Kibana space {space!r}")
    return 0
