from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest

from common.errors import ConfigError
from common.yamlconf import Duration, Size, from_dict, parse_yaml


@dataclass(frozen=True)
class Inner:
    ttl: Duration = Duration(1.0)
    size: Size = Size(1)


@dataclass(frozen=True)
class Outer:
    name: str = "x"
    paths: tuple[Path, ...] = ()
    inner: Inner = field(default_factory=Inner)


def test_builds_nested_dataclasses_with_units() -> None:
    data = parse_yaml("name: a\npaths: [/x, /y]\ninner:\n  ttl: 10m\n  size: 2MiB\n", "c.yml")
    config = from_dict(Outer, data, source="c.yml")
    expected_inner = Inner(Duration(600.0), Size(2 * 1024 * 1024))
    assert config == Outer("a", (Path("/x"), Path("/y")), expected_inner)


def test_unknown_key_is_named_with_its_path_line_and_column() -> None:
    data = parse_yaml("name: a\ninner:\n  ttl: 1s\n  colour: red\n", "c.yml")
    with pytest.raises(ConfigError) as e:
        from_dict(Outer, data, source="c.yml")
    assert str(e.value).startswith("c.yml:4:3: unknown key 'inner.colour'")


def test_wrong_type_names_the_key() -> None:
    data = parse_yaml("inner:\n  ttl: soon\n", "c.yml")
    with pytest.raises(ConfigError, match=r"c.yml:2:3: 'inner.ttl': not a duration"):
        from_dict(Outer, data, source="c.yml")


def test_yaml_syntax_error_has_a_position() -> None:
    with pytest.raises(ConfigError, match=r"c.yml:2:\d+: invalid YAML"):
        parse_yaml("a: [1,\nb: }", "c.yml")


def test_duplicate_keys_are_refused() -> None:
    with pytest.raises(ConfigError, match="duplicate key 'name'"):
        parse_yaml("name: a\nname: b\n", "c.yml")
