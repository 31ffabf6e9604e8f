"""The index template's types agree with ECS for every ECS field we map."""

from __future__ import annotations

import datetime as dt

from collector.outputs.es_fields import ALL_FIELDS, ECS_FIELDS, SISGUARD_FIELDS, properties
from collector.outputs.es_indices import IndexNames, template_body
from tests.ecs import KEYWORD_FAMILY, TEXT_FAMILY, ecs

# ECS types with no equivalent on every engine, and what we map them to instead
SUBSTITUTES = {"wildcard": "keyword", "match_only_text": "text", "constant_keyword": "keyword",
               "integer": "long", "flattened": "object"}


def test_every_ecs_field_in_the_template_exists_in_ecs_with_its_type() -> None:
    schema = ecs()
    wrong = []
    for name, kind in ECS_FIELDS.items():
        field = schema.get(name)
        if field is None:
            wrong.append(f"{name}: not in ECS")
            continue
        expected = SUBSTITUTES.get(field["type"], field["type"])
        if kind != expected:
            wrong.append(f"{name}: template {kind}, ECS {field['type']}")
    assert wrong == []


def test_our_own_fields_are_under_sisguard_and_do_not_shadow_ecs() -> None:
    assert all(name.startswith("sisguard.") for name in SISGUARD_FIELDS)
    assert not set(SISGUARD_FIELDS) & set(ecs())


def test_template_has_every_field_and_refuses_nothing_unexpected() -> None:
    body = template_body("sisguard-events-*", shards=1, replicas=0)
    mappings = body["template"]["mappings"]
    assert mappings["dynamic"] is False  # unknown fields: kept, never a mapping conflict

    def walk(props: dict[str, object], prefix: str = "") -> set[str]:
        names: set[str] = set()
        for key, value in props.items():
            assert isinstance(value, dict)
            if "properties" in value and "type" not in value:
                names |= walk(value["properties"], f"{prefix}{key}.")
            else:
                names.add(f"{prefix}{key}")
        return names

    assert walk(properties()) == set(ALL_FIELDS)


def test_keyword_and_text_families_are_what_the_validator_accepts() -> None:
    assert "keyword" in KEYWORD_FAMILY and "text" in TEXT_FAMILY


def test_daily_index_names_follow_the_ingestion_day_not_the_agents_clock() -> None:
    names = IndexNames("sisguard")
    from collector.records import Kind

    doc = {"@timestamp": "2099-12-31T23:59:59Z",
           "event": {"ingested": "2026-01-31T23:59:59.000001Z"}}
    assert names.daily(Kind.EVENT, doc) == "sisguard-events-2026.01.31"
    today = dt.datetime.now(dt.UTC).strftime("%Y.%m.%d")
    for odd in ({"@timestamp": "2099-01-01T00:00:00Z"},
                {"event": {"ingested": "9999-99-99T00:00:00Z/../x"}},
                {"event": {"ingested": "\uff12\uff10\uff12\uff16-01-31T00:00:00Z"}},
                {"event": "x"}):
        assert names.daily(Kind.ALERT, odd) == f"sisguard-alerts-{today}"
    assert names.day_of("sisguard-alerts-2026.01.31") is not None
    assert names.day_of("sisguard-alerts-latest") is None
