#!/usr/bin/env python3
"""Write sisguard.ndjson: the Kibana saved objects for sisguard's indices.

    python deploy/kibana/build.py            # rewrite deploy/kibana/sisguard.ndjson
    python deploy/kibana/build.py --check    # exit 1 when the committed file is stale
    python deploy/kibana/build.py --prefix acme --output acme.ndjson   # other index prefix

Data views for the events and alerts indices, four saved searches and an overview
dashboard of legacy (aggregation-based) visualizations, in the format of a Kibana 8.8+
export. Ids are stable, so importing again (with overwrite) updates the objects in place.
Every object is checked against the index template (``collector.kibana.problems``)
before anything is written.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from collector.kibana import INDEX_REF, problems

HERE = Path(__file__).resolve().parent
OUTPUT = HERE / "sisguard.ndjson"
CORE_VERSION = "8.8.0"
# the last migration each type's shape below already has (as Kibana's own sample data)
TYPE_VERSIONS = {"index-pattern": "7.11.0", "search": "7.9.3", "visualization": "8.0.0",
                 "dashboard": "8.7.0"}
EVENTS, ALERTS = "sisguard-events", "sisguard-alerts"
SEVERITY_COLORS = {"critical": "#BD271E", "high": "#E7664C", "medium": "#D6BF57",
                   "low": "#6092C0", "informational": "#54B399"}


def _compact(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _saved_object(kind: str, object_id: str, attributes: dict[str, Any],
                  references: list[dict[str, str]]) -> dict[str, Any]:
    return {"attributes": attributes, "coreMigrationVersion": CORE_VERSION, "id": object_id,
            "references": references, "type": kind,
            "typeMigrationVersion": TYPE_VERSIONS[kind]}


def _search_source(query: str) -> dict[str, str]:
    return {"searchSourceJSON": _compact({
        "query": {"query": query, "language": "kuery"}, "filter": [],
        "indexRefName": INDEX_REF})}


def _index_ref(data_view: str) -> list[dict[str, str]]:
    return [{"id": data_view, "name": INDEX_REF, "type": "index-pattern"}]


def data_view(object_id: str, pattern: str, name: str) -> dict[str, Any]:
    return _saved_object("index-pattern", object_id, {
        "fieldAttrs": "{}",
        "fieldFormatMap": _compact({"file.size": {"id": "bytes"},
                                    "sisguard.fim.before.size": {"id": "bytes"}}),
        "fields": "[]", "name": name, "runtimeFieldMap": "{}",
        "timeFieldName": "@timestamp", "title": pattern, "typeMeta": "{}",
    }, [])


def saved_search(object_id: str, title: str, data_view_id: str, query: str,
                 columns: list[str], *, sort: list[list[str]] | None = None,
                 description: str = "") -> dict[str, Any]:
    return _saved_object("search", object_id, {
        "columns": columns, "description": description, "hits": 0,
        "kibanaSavedObjectMeta": _search_source(query),
        "sort": sort or [["@timestamp", "desc"]], "title": title, "version": 1,
    }, _index_ref(data_view_id))


# ------------------------------------------------------------------ aggregations

def _count() -> dict[str, Any]:
    return {"id": "1", "enabled": True, "type": "count", "params": {}, "schema": "metric"}


def _metric(agg_id: str, kind: str, field: str, label: str) -> dict[str, Any]:
    return {"id": agg_id, "enabled": True, "type": kind,
            "params": {"field": field, "customLabel": label}, "schema": "metric"}


def _over_time(agg_id: str) -> dict[str, Any]:
    return {"id": agg_id, "enabled": True, "type": "date_histogram", "schema": "segment",
            "params": {"field": "@timestamp", "useNormalizedEsInterval": True,
                       "scaleMetricValues": False, "interval": "auto",
                       "drop_partials": False, "min_doc_count": 1, "extended_bounds": {},
                       "customLabel": ""}}


def _terms(agg_id: str, field: str, schema: str, label: str, size: int) -> dict[str, Any]:
    return {"id": agg_id, "enabled": True, "type": "terms", "schema": schema,
            "params": {"field": field, "orderBy": "1", "order": "desc", "size": size,
                       "otherBucket": False, "otherBucketLabel": "Other",
                       "missingBucket": False, "missingBucketLabel": "Missing",
                       "customLabel": label}}


def _bar_params() -> dict[str, Any]:
    """Stacked vertical bars, as Kibana's aggregation-based editor saves them."""
    return {
        "type": "histogram", "grid": {"categoryLines": False},
        "categoryAxes": [{"id": "CategoryAxis-1", "type": "category", "position": "bottom",
                          "show": True, "style": {}, "scale": {"type": "linear"},
                          "labels": {"show": True, "filter": True, "truncate": 100},
                          "title": {}}],
        "valueAxes": [{"id": "ValueAxis-1", "name": "LeftAxis-1", "type": "value",
                       "position": "left", "show": True, "style": {},
                       "scale": {"type": "linear", "mode": "normal"},
                       "labels": {"show": True, "rotate": 0, "filter": False,
                                  "truncate": 100},
                       "title": {"text": "Count"}}],
        "seriesParams": [{"show": True, "type": "histogram", "mode": "stacked",
                          "data": {"label": "Count", "id": "1"},
                          "valueAxis": "ValueAxis-1", "drawLinesBetweenPoints": True,
                          "lineWidth": 2, "showCircles": True, "circlesRadius": 1}],
        "addTooltip": True, "detailedTooltip": True,
        "palette": {"type": "palette", "name": "default"},
        "addLegend": True, "legendPosition": "right", "times": [], "addTimeMarker": False,
        "thresholdLine": {"show": False, "value": 10, "width": 1, "style": "full",
                          "color": "#E7664C"},
        "labels": {"show": False}, "radiusRatio": 0, "fittingFunction": "linear",
        "truncateLegend": True, "maxLegendLines": 1, "isVislibVis": True,
    }


def _table_params() -> dict[str, Any]:
    return {"perPage": 10, "showPartialRows": False, "showMetricsAtAllLevels": False,
            "showTotal": False, "totalFunc": "sum", "percentageCol": "",
            "autoFitRowToContent": False, "row": True}


def visualization(object_id: str, title: str, data_view_id: str, query: str, *,
                  vis_type: str, aggs: list[dict[str, Any]],
                  ui_state: dict[str, Any] | None = None,
                  description: str = "") -> dict[str, Any]:
    params = _bar_params() if vis_type == "histogram" else _table_params()
    return _saved_object("visualization", object_id, {
        "description": description,
        "kibanaSavedObjectMeta": _search_source(query),
        "title": title,
        "uiStateJSON": _compact(ui_state or {}),
        "version": 1,
        "visState": _compact({"title": title, "type": vis_type, "aggs": aggs,
                              "params": params}),
    }, _index_ref(data_view_id))


def dashboard(object_id: str, title: str, description: str,
              panels: list[tuple[dict[str, Any], int, int, int, int]]) -> dict[str, Any]:
    """``panels``: (saved object, x, y, w, h) on Kibana's 48-column grid."""
    entries, references = [], []
    for number, (obj, x, y, w, h) in enumerate(panels, start=1):
        index = str(number)
        entries.append({"version": CORE_VERSION, "type": obj["type"],
                        "gridData": {"x": x, "y": y, "w": w, "h": h, "i": index},
                        "panelIndex": index, "embeddableConfig": {"enhancements": {}},
                        "panelRefName": f"panel_{index}"})
        references.append({"id": obj["id"], "name": f"{index}:panel_{index}",
                           "type": obj["type"]})
    return _saved_object("dashboard", object_id, {
        "description": description,
        "kibanaSavedObjectMeta": {"searchSourceJSON": _compact(
            {"query": {"query": "", "language": "kuery"}, "filter": []})},
        "optionsJSON": _compact({"useMargins": True, "syncColors": False,
                                 "syncCursor": True, "syncTooltips": False,
                                 "hidePanelTitles": False}),
        "panelsJSON": _compact(entries),
        "refreshInterval": {"pause": False, "value": 60000},
        "timeFrom": "now-24h", "timeRestore": True, "timeTo": "now",
        "title": title, "version": 1,
    }, references)


# ------------------------------------------------------------------ the objects

def build(prefix: str = "sisguard") -> list[dict[str, Any]]:
    events = data_view(EVENTS, f"{prefix}-events-*", "sisguard events")
    alerts = data_view(ALERTS, f"{prefix}-alerts-*", "sisguard alerts")
    fim_query = 'event.dataset: "sisguard.fim"'
    failed_query = 'event.category: "authentication" and event.outcome: "failure"'
    searches = [
        saved_search("sisguard-file-changes", "sisguard: file changes", EVENTS, fim_query,
                     ["host.name", "event.action", "file.path", "file.type", "file.owner",
                      "file.mode", "file.size", "file.hash.sha256", "sisguard.fim.changed",
                      "sisguard.content.signatures"],
                     description="File integrity events: created, updated, deleted, "
                                 "renamed, attributes modified."),
        saved_search("sisguard-failed-logins", "sisguard: failed logins", EVENTS,
                     failed_query,
                     ["host.name", "user.name", "source.ip", "event.action", "process.name",
                      "sisguard.auth.method", "sisguard.auth.invalid_user", "message"],
                     description="Failed SSH, sudo and su authentications."),
        saved_search("sisguard-new-listening-ports", "sisguard: new listening ports", EVENTS,
                     'event.action: "listen_opened"',
                     ["host.name", "server.ip", "server.port", "network.transport",
                      "process.name", "process.executable", "user.id"],
                     description="Sockets that started listening."),
        saved_search("sisguard-alerts-by-severity", "sisguard: alerts by severity", ALERTS,
                     'event.kind: "alert"',
                     ["event.severity", "sisguard.alert.level", "rule.name", "host.name",
                      "organization.name", "threat.technique.id", "rule.id", "rule.ruleset"],
                     sort=[["event.severity", "desc"], ["@timestamp", "desc"]],
                     description="Alerts, most severe first (critical 99, high 73, "
                                 "medium 47, low 21)."),
        saved_search("sisguard-agent-health", "sisguard: agent health", EVENTS,
                     'event.dataset: "sisguard.agent"',
                     ["host.name", "agent.id", "event.action", "message",
                      "sisguard.agent.status", "sisguard.spool.dropped",
                      "sisguard.sensor.name", "error.message"],
                     description="The agents' own events: started, stopped, offline, "
                                 "spool drops, sensor errors."),
    ]
    over_time = visualization(
        "sisguard-alerts-over-time", "sisguard: alerts over time by severity", ALERTS,
        'event.kind: "alert"', vis_type="histogram",
        aggs=[_count(), _over_time("2"),
              _terms("3", "sisguard.alert.level", "group", "Level", 5)],
        ui_state={"vis": {"colors": SEVERITY_COLORS}})
    top_rules = visualization(
        "sisguard-top-rules", "sisguard: top rules", ALERTS, 'event.kind: "alert"',
        vis_type="table",
        aggs=[_count(), _metric("2", "max", "event.severity", "Highest severity"),
              _metric("3", "cardinality", "host.name", "Hosts"),
              _terms("4", "rule.name", "bucket", "Rule", 20)])
    top_hosts = visualization(
        "sisguard-top-hosts", "sisguard: top hosts by alerts", ALERTS, 'event.kind: "alert"',
        vis_type="table",
        aggs=[_count(), _metric("2", "max", "event.severity", "Highest severity"),
              _metric("3", "cardinality", "rule.id", "Rules"),
              _terms("4", "host.name", "bucket", "Host", 20),
              _terms("5", "organization.name", "bucket", "Organization", 1)])
    fim_by_host = visualization(
        "sisguard-file-changes-by-host", "sisguard: file changes by host", EVENTS, fim_query,
        vis_type="histogram",
        aggs=[_count(), _terms("2", "host.name", "segment", "Host", 20),
              _terms("3", "event.action", "group", "Change", 5)])
    failed_by_source = visualization(
        "sisguard-failed-logins-by-source", "sisguard: failed logins by source address",
        EVENTS, failed_query, vis_type="table",
        aggs=[_count(), _metric("2", "cardinality", "user.name", "User names tried"),
              _metric("3", "cardinality", "host.name", "Hosts"),
              _metric("4", "max", "@timestamp", "Last attempt"),
              _terms("5", "source.ip", "bucket", "Source address", 20)])
    overview = dashboard(
        "sisguard-overview", "sisguard: overview",
        "Alerts by severity, top rules and hosts, file changes, failed logins.",
        [(over_time, 0, 0, 48, 14),
         (top_rules, 0, 14, 24, 15), (top_hosts, 24, 14, 24, 15),
         (fim_by_host, 0, 29, 24, 15), (failed_by_source, 24, 29, 24, 15),
         (searches[3], 0, 44, 48, 20)])
    return [events, alerts, *searches, over_time, top_rules, top_hosts, fim_by_host,
            failed_by_source, overview]


def render(objects: list[dict[str, Any]]) -> str:
    return "".join(json.dumps(obj, sort_keys=True, ensure_ascii=False,
                              separators=(",", ":")) + "\n" for obj in objects)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prefix", default="sisguard", help="index prefix (default sisguard)")
    parser.add_argument("--output", default=str(OUTPUT), help="file to write, - for stdout")
    parser.add_argument("--check", action="store_true",
                        help="write nothing; exit 1 if the output file differs")
    args = parser.parse_args(argv)
    objects = build(args.prefix)
    found = problems(objects)
    if found:
        print("build.py: refusing to write broken saved objects:", *found, sep="\n  ",
              file=sys.stderr)
        return 1
    text = render(objects)
    if args.check:
        current = Path(args.output).read_text(encoding="utf-8") \
            if Path(args.output).exists() else ""
        if current != text:
            print(f"build.py: {args.output} is stale: run deploy/kibana/build.py",
                  file=sys.stderr)
            return 1
        return 0
    if args.output == "-":
        sys.stdout.write(text)
    else:
        Path(args.output).write_text(text, encoding="utf-8")
        print(f"wrote {len(objects)} saved objects to {args.output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
