"""Check documents against the Elastic Common Schema (../shared/data/ecs/ecs_flat.yml).

A leaf field is valid when it is under ``sisguard.*``, or ECS defines it (or it sits
below an ECS ``object`` field) with a type its value fits; the categorisation fields
must hold ECS' allowed values.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from tests.harness import SHARED, in_ci

ECS_FILE = SHARED / "data" / "ecs" / "ecs_flat.yml"
CATEGORISATION = ("event.kind", "event.category", "event.type", "event.outcome")
KEYWORD_FAMILY = {"keyword", "wildcard", "constant_keyword"}
TEXT_FAMILY = {"text", "match_only_text"}


@functools.cache
def ecs() -> dict[str, dict[str, Any]]:
    if not ECS_FILE.exists():
        if in_ci():
            pytest.fail(f"{ECS_FILE} is missing: CI must have ../shared")
        pytest.skip(f"{ECS_FILE} is missing (../shared not beside the repo)")
    with open(ECS_FILE, encoding="utf-8") as f:
        return dict(yaml.safe_load(f))


def leaves(doc: dict[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    for key, value in doc.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            yield from leaves(value, name + ".")
        else:
            yield name, value


def _fits(kind: str, value: Any) -> bool:
    values = value if isinstance(value, list) else [value]
    for v in values:
        if v is None:
            continue
        if kind in KEYWORD_FAMILY | TEXT_FAMILY:
            ok = isinstance(v, (str, int, float)) and not isinstance(v, bool)
        elif kind in {"long", "integer"}:
            ok = isinstance(v, int) and not isinstance(v, bool)
        elif kind in {"float", "double", "scaled_float"}:
            ok = isinstance(v, (int, float)) and not isinstance(v, bool)
        elif kind == "boolean":
            ok = isinstance(v, bool)
        elif kind == "date":
            ok = isinstance(v, str) and len(v) >= 10 and v[4] == "-"
        elif kind == "ip":
            try:
                ipaddress.ip_address(str(v))
                ok = True
            except ValueError:
                ok = False
        else:
            ok = True  # object, flattened, nested, geo_point: any shape
        if not ok:
            return False
    return True


def _object_parent(name: str) -> str | None:
    parts = name.split(".")
    for i in range(len(parts) - 1, 0, -1):
        parent = ".".join(parts[:i])
        if ecs().get(parent, {}).get("type") in {"object", "flattened", "nested"}:
            return parent
    return None


def problems(doc: dict[str, Any]) -> list[str]:
    """Every way ``doc`` departs from ECS (empty: valid)."""
    schema = ecs()
    found: list[str] = []
    for name, value in leaves(doc):
        if name.startswith("sisguard."):
            continue
        field = schema.get(name)
        if field is None:
            if _object_parent(name) is None:
                found.append(f"{name}: not an ECS field (put it under sisguard.*)")
            continue
        if not _fits(field["type"], value):
            found.append(f"{name}: {value!r} does not fit ECS type {field['type']}")
        if name in CATEGORISATION:
            allowed = {a["name"] for a in field.get("allowed_values", [])}
            for v in value if isinstance(value, list) else [value]:
                if v not in allowed:
                    found.append(f"{name}: {v!r} is not an ECS allowed value")
    return found
