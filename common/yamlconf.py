"""YAML that remembers where each value came from, and frozen dataclasses built from it.

``load_yaml(path)`` returns plain dicts and lists whose mappings are ``PositionedDict``:
each knows the line and column of its keys, so an error can name ``file:line:col``.
``from_dict(Config, data, source=...)`` builds a frozen dataclass, rejecting unknown keys
with their dotted path, and converting nested dataclasses, tuples, enums, paths and
durations ("30s", "10m", "12h", "7d").
"""

from __future__ import annotations

import dataclasses
import enum
import re
import types
import typing
from pathlib import Path
from typing import Any, TypeVar, Union, get_args, get_origin, get_type_hints

import yaml

from common.errors import ConfigError, Location

T = TypeVar("T")


class PositionedDict(dict[str, Any]):
    """A dict that knows the (line, column) of each key, counted from 1."""

    def __init__(self) -> None:
        super().__init__()
        self.positions: dict[str, tuple[int, int]] = {}
        self.start: tuple[int, int] | None = None


class PositionedLoader(yaml.SafeLoader):
    """A safe loader whose mappings are PositionedDicts (also for multi-document files:
    ``PositionedLoader(text)`` and ``get_data()`` per document)."""


def _construct_mapping(loader: PositionedLoader, node: yaml.MappingNode) -> PositionedDict:
    loader.flatten_mapping(node)
    result = PositionedDict()
    result.start = (node.start_mark.line + 1, node.start_mark.column + 1)
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        if not isinstance(key, str | int | float | bool):
            raise yaml.MarkedYAMLError(
                problem="mapping keys must be scalars", problem_mark=key_node.start_mark
            )
        key = str(key)
        if key in result:
            raise yaml.MarkedYAMLError(
                problem=f"duplicate key {key!r}", problem_mark=key_node.start_mark
            )
        result[key] = loader.construct_object(value_node, deep=True)
        result.positions[key] = (key_node.start_mark.line + 1, key_node.start_mark.column + 1)
    return result


PositionedLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def parse_yaml(text: str, source: str) -> Any:
    """Parse YAML text; syntax errors become ConfigError with file, line and column."""
    try:
        return yaml.load(text, Loader=PositionedLoader)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark
        loc = Location(source, mark.line + 1, mark.column + 1) if mark else Location(source)
        raise ConfigError(f"invalid YAML: {e.problem}", location=loc) from e
    except yaml.reader.ReaderError as e:  # a character YAML does not allow: no mark
        line = text.count("\n", 0, e.position) + 1
        column = e.position - (text.rfind("\n", 0, e.position) + 1) + 1
        raise ConfigError(f"invalid YAML: {e}", location=Location(source, line, column)) from e
    except yaml.YAMLError as e:
        raise ConfigError(f"invalid YAML: {e}", location=Location(source)) from e


def load_yaml(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"cannot read: {e.strerror}", location=Location(str(path))) from e
    return parse_yaml(text, str(path))


def load_mapping(path: Path) -> dict[str, Any]:
    """A config file: a YAML mapping (an empty file is an empty one)."""
    data = load_yaml(path)
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"top level: expected a mapping, got {type(data).__name__}",
                          location=Location(str(path), 1, 1))
    return data


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}


def parse_duration(value: str | int | float) -> float:
    """'30s' -> 30.0, '10m' -> 600.0, 5 -> 5.0 (seconds)."""
    if isinstance(value, bool):
        raise ValueError(f"not a duration: {value!r}")
    if isinstance(value, int | float):
        return float(value)
    match = _DURATION.match(value)
    if not match:
        raise ValueError(f"not a duration: {value!r} (use e.g. 30s, 10m, 12h, 7d)")
    return float(match.group(1)) * _UNITS[match.group(2)]


_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(b|kib|mib|gib|kb|mb|gb)?\s*$", re.IGNORECASE)
_SIZE_UNITS = {"b": 1, "kib": 1024, "mib": 1024**2, "gib": 1024**3, "kb": 1000, "mb": 1000**2,
               "gb": 1000**3, None: 1}


def parse_size(value: str | int) -> int:
    """'64MiB' -> 67108864, 1000 -> 1000 (bytes)."""
    if isinstance(value, bool):
        raise ValueError(f"not a size: {value!r}")
    if isinstance(value, int):
        return value
    match = _SIZE.match(str(value))
    if not match:
        raise ValueError(f"not a size: {value!r} (use e.g. 512MiB, 1GiB)")
    unit = match.group(2).lower() if match.group(2) else None
    return int(float(match.group(1)) * _SIZE_UNITS[unit])


class Duration(float):
    """Marks a dataclass field (seconds) that accepts '30s', '10m', ... in YAML."""


class Size(int):
    """Marks a dataclass field (bytes) that accepts '64MiB', ... in YAML."""


def _where(source: str, data: Any, key: str | None) -> Location:
    if isinstance(data, PositionedDict):
        pos = data.positions.get(key) if key is not None else data.start
        if pos:
            return Location(source, pos[0], pos[1])
    return Location(source)


def from_dict(cls: type[T], data: Any, *, source: str, path: str = "") -> T:
    """Build the frozen dataclass ``cls`` from a mapping, strictly."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path or 'top level'}: expected a mapping, got {type(data).__name__}",
                          location=_where(source, data, None))
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"{cls} is not a dataclass")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = get_type_hints(cls)
    unknown = [k for k in data if k.replace("-", "_") not in fields]
    if unknown:
        key = unknown[0]
        known = ", ".join(sorted(fields))
        raise ConfigError(f"unknown key '{_join(path, key)}' (known here: {known})",
                          location=_where(source, data, key))
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        name = key.replace("-", "_")
        try:
            kwargs[name] = _convert(hints[name], value, source=source, path=_join(path, key))
        except ConfigError as e:
            if e.location is not None and e.location.line is not None:
                raise
            # a value with no position of its own (a list, a scalar): its key's line
            raise ConfigError(e.message, location=_where(source, data, key)) from e
        except (ValueError, TypeError) as e:
            raise ConfigError(f"'{_join(path, key)}': {e}",
                              location=_where(source, data, key)) from e
    try:
        return cls(**kwargs)
    except TypeError as e:
        raise ConfigError(f"{path or 'top level'}: {e}", location=_where(source, data, None)) from e


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _convert(hint: Any, value: Any, *, source: str, path: str) -> Any:
    origin = get_origin(hint)
    if origin in (Union, types.UnionType):
        args = [a for a in get_args(hint) if a is not type(None)]
        if value is None:
            return None
        # a mapping goes to the dataclass branch (e.g. `str | WatchPath`), else the first
        classes = [a for a in args if dataclasses.is_dataclass(a)]
        if isinstance(value, dict) and classes:
            return _convert(classes[0], value, source=source, path=path)
        scalars = [a for a in args if not dataclasses.is_dataclass(a)] or args
        return _convert(scalars[0], value, source=source, path=path)
    if hint is Any:
        return value
    if dataclasses.is_dataclass(hint) and isinstance(hint, type):
        return from_dict(hint, value, source=source, path=path)
    if origin is tuple:
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list):
            raise TypeError(f"expected a list, got {type(value).__name__}")
        (item,) = get_args(hint)[:1]
        return tuple(_convert(item, v, source=source, path=f"{path}[{i}]")
                     for i, v in enumerate(value))
    if origin is dict or origin is typing.Mapping:
        if not isinstance(value, dict):
            raise TypeError(f"expected a mapping, got {type(value).__name__}")
        _, vt = get_args(hint)
        return {str(k): _convert(vt, v, source=source, path=f"{path}.{k}")
                for k, v in value.items()}
    if hint is Duration:
        return Duration(parse_duration(value))
    if hint is Size:
        return Size(parse_size(value))
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        try:
            return hint(value)
        except ValueError:
            allowed = ", ".join(str(m.value) for m in hint)
            raise ValueError(f"{value!r} is not one of: {allowed}") from None
    if hint is Path:
        if not isinstance(value, str):
            raise TypeError(f"expected a path, got {type(value).__name__}")
        return Path(value)
    if hint is bool:
        if not isinstance(value, bool):
            raise TypeError(f"expected true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"expected an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise TypeError(f"expected a number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str | int | float) or isinstance(value, bool):
            raise TypeError(f"expected a string, got {type(value).__name__}")
        return str(value)
    return value
