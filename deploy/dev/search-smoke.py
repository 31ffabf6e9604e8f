#!/usr/bin/env python3
"""Smoke-check the search node started by deploy/dev/search (stdlib only, no client library).

    python3 deploy/dev/search-smoke.py [URL]      # default http://127.0.0.1:${PORT:-9200}

Checks what sisguard's indexer needs: GET / (+ X-Elastic-Product header), a composable index
template with keyword/date/long/ip/text/flattened fields (flat_object on OpenSearch), bulk
op_type=create with explicit _id (1,000 docs, then the same again: every item must be a
409), refresh, _count, search with filters and aggregations, get mapping, _cat/indices,
cluster health, delete index and template.
Leaves nothing behind (its names start with "sisguard-smoke"). Exit status 0 when all pass.
"""

import json
import os
import sys
import urllib.error
import urllib.request

URL = (
    sys.argv[1] if len(sys.argv) > 1 else f"http://127.0.0.1:{os.environ.get('PORT', '9200')}"
).rstrip("/")
INDEX = "sisguard-smoke-events-2026.11.29"
TEMPLATE = "sisguard-smoke-events"
failures = []
checks = 0


def call(method, path, body=None, ndjson=False):
    data = None
    headers = {}
    if body is not None:
        if ndjson:
            data = body.encode()
            headers["Content-Type"] = "application/x-ndjson"
        else:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
    req = urllib.request.Request(URL + path, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            raw = r.read()
            return (
                r.status,
                dict(r.headers),
                (json.loads(raw) if raw and method != "HEAD" else None),
            )
    except urllib.error.HTTPError as e:
        raw = e.read()
        try:
            parsed = json.loads(raw)
        except ValueError:
            parsed = raw.decode("utf-8", "replace")
        return e.code, dict(e.headers), parsed


def check(name, cond, detail=""):
    global checks
    checks += 1
    print(("ok   " if cond else "FAIL ") + name + ("" if cond else f"  -- {detail}"))
    if not cond:
        failures.append(name)


def main():
    st, hdr, body = call("GET", "/")
    lower = {k.lower(): v for k, v in hdr.items()}
    check("GET / returns 200", st == 200, body)
    opensearch = (
        isinstance(body, dict) and body.get("version", {}).get("distribution") == "opensearch"
    )
    if opensearch:  # ENGINE=opensearch: no Elastic product header, flat_object instead of flattened
        check("X-OpenSearch-Version header", "x-opensearch-version" in lower, hdr)
    else:
        check(
            "X-Elastic-Product: Elasticsearch",
            lower.get("x-elastic-product") == "Elasticsearch",
            hdr,
        )
    flat = "flat_object" if opensearch else "flattened"
    check(
        "GET / has version.number",
        isinstance(body, dict) and "number" in body.get("version", {}),
        body,
    )
    if isinstance(body, dict):
        version = body.get("version", {}).get("number")
        print(f"     server {version} cluster {body.get('cluster_name')}")

    call("DELETE", f"/{INDEX}")
    st, _, body = call(
        "PUT",
        f"/_index_template/{TEMPLATE}",
        {
            "index_patterns": ["sisguard-smoke-events-*"],
            "priority": 500,
            "template": {
                "settings": {"number_of_shards": 1, "number_of_replicas": 0},
                "mappings": {
                    "dynamic": "strict",
                    "properties": {
                        "@timestamp": {"type": "date"},
                        "event": {
                            "properties": {"kind": {"type": "keyword"}, "seq": {"type": "long"}}
                        },
                        "host": {"properties": {"name": {"type": "keyword"}, "ip": {"type": "ip"}}},
                        "message": {"type": "text"},
                        "labels": {"type": flat},
                    },
                },
            },
        },
    )
    check("PUT _index_template (composable)", st == 200 and body.get("acknowledged"), body)

    lines = []
    for i in range(1000):
        lines.append(json.dumps({"create": {"_index": INDEX, "_id": f"ev-{i:05d}"}}))
        lines.append(
            json.dumps(
                {
                    "@timestamp": f"2026-11-29T12:{i // 60 % 60:02d}:{i % 60:02d}Z",
                    "event": {"kind": "alert" if i % 10 == 0 else "event", "seq": i},
                    "host": {"name": f"h{i % 7}", "ip": f"10.0.{i % 5}.{i % 250 + 1}"},
                    "message": f"login failure for user u{i % 13}",
                    "labels": {"env": "dev", "team": f"t{i % 3}"},
                }
            )
        )
    payload = "\n".join(lines) + "\n"
    st, _, body = call("POST", "/_bulk", payload, ndjson=True)
    statuses = (
        [it["create"]["status"] for it in body.get("items", [])] if isinstance(body, dict) else []
    )
    check(
        "bulk create 1000 docs -> 201 each",
        st == 200 and statuses == [201] * 1000 and not body["errors"],
        (st, set(statuses)),
    )
    st, _, body = call("POST", "/_bulk", payload, ndjson=True)
    statuses = (
        [it["create"]["status"] for it in body.get("items", [])] if isinstance(body, dict) else []
    )
    check(
        "bulk re-send -> 409 per item",
        st == 200 and statuses == [409] * 1000 and body["errors"],
        (st, set(statuses)),
    )

    st, _, body = call("POST", f"/{INDEX}/_refresh")
    check("refresh", st == 200, body)
    st, _, body = call("GET", f"/{INDEX}/_count")
    check("_count == 1000", st == 200 and body.get("count") == 1000, body)
    st, _, body = call(
        "POST",
        "/sisguard-smoke-events-*/_search",
        {
            "size": 2,
            "sort": [{"event.seq": "desc"}],
            "query": {
                "bool": {
                    "filter": [
                        {"term": {"event.kind": "alert"}},
                        {"range": {"@timestamp": {"gte": "2026-11-29T12:00:00Z"}}},
                        {"term": {"host.ip": "10.0.0.0/16"}},
                        {"term": {"labels.team": "t1"}},
                    ],
                    "must": [{"match": {"message": "failure"}}],
                }
            },
            "aggs": {
                "hosts": {"terms": {"field": "host.name"}},
                "per_10m": {"date_histogram": {"field": "@timestamp", "fixed_interval": "10m"}},
            },
        },
    )
    ok = (
        st == 200
        and body["hits"]["total"]["value"] == 33
        and body["hits"]["hits"][0]["_id"] == "ev-00970"
    )
    check("search (filters, sort, terms + date_histogram aggs)", ok, str(body)[:300])
    st, _, body = call("GET", f"/{INDEX}/_mapping")
    props = (
        body.get(INDEX, {}).get("mappings", {}).get("properties", {})
        if isinstance(body, dict)
        else {}
    )
    check(
        "get mapping",
        st == 200
        and props.get("labels", {}).get("type") == flat
        and props.get("host", {}).get("properties", {}).get("ip", {}).get("type") == "ip",
        body,
    )
    st, _, body = call("GET", "/_cat/indices?format=json")
    check(
        "_cat/indices lists the index",
        st == 200 and any(r.get("index") == INDEX for r in body),
        body,
    )
    st, _, body = call("GET", "/_cluster/health")
    check(
        "cluster health green/yellow", st == 200 and body.get("status") in ("green", "yellow"), body
    )
    st, _, body = call("DELETE", f"/{INDEX}")
    check("delete index", st == 200 and body.get("acknowledged"), body)
    st, _, _ = call("HEAD", f"/{INDEX}")
    check("index gone (HEAD -> 404)", st == 404, st)
    st, _, body = call("DELETE", f"/_index_template/{TEMPLATE}")
    check("delete index template", st == 200, body)

    print(f"search smoke: {checks - len(failures)}/{checks} checks ok against {URL}")
    return 1 if failures else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except urllib.error.URLError as e:
        print(f"search smoke: cannot reach {URL}: {e}", file=sys.stderr)
        sys.exit(1)
