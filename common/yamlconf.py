"""YAML that remembers where each value came from, and frozen dataclasses built from it.

``load_yaml(path)`` returns plain dicts and lists whose mappings are ``PositionedDict``:
each knows the line and column of its keys, so an error can name ``file:line:col``.
``from_dict(Config, data, source=...)`` builds a frozen dataclass, rejecting unknown keys
with their dotted path, and converting nested dataclasses, tuples, enums, paths and
durations ("30s", "10m", "12h", "7d").
"""

from __future__ import annotations

import ast
import dataclasses
import enum
import re
import sys
import types
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar, Union, get_args, get_origin, get_type_hints

import yaml

from common.errors import ConfigError, Location

T = TypeVar("T")
# ``X | Y`` at run time (3.10+); on 3.9 annotations are strings read as typing.Union
_UNION_TYPE = getattr(types, "UnionType", None)


class PositionedDict(dict[str, Any]):
    """A dict that knows the (line, column) of each key, counted from 1."""

    def __init__(self) -> None:
        super().__init__()
        self.positions: dict[str, tuple[int, int]] = {}
        self.start: tuple[int, int] | None = None


class PositionedLoader(yaml.SafeLoader):
    """A safe loader whose mappings are PositionedDicts (also for multi-document files:
    ``PositionedLoader(text)`` and ``get_data()`` per document)."""


def _construct(loader: PositionedLoader, node: yaml.Node) -> Any:
    construct: Callable[..., Any] = loader.construct_object   # untyped in older stubs
    return construct(node, deep=True)


def _construct_mapping(loader: PositionedLoader, node: yaml.MappingNode) -> PositionedDict:
    loader.flatten_mapping(node)
    result = PositionedDict()
    result.start = (node.start_mark.line + 1, node.start_mark.column + 1)
    for key_node, value_node in node.value:
        key = _construct(loader, key_node)
        if not isinstance(key, (str, int, float, bool)):
            raise yaml.MarkedYAMLError(
                problem="mapping keys must be scalars", problem_mark=key_node.start_mark
            )
        key = str(key)
        if key in result:
            raise yaml.MarkedYAMLError(
                problem=f"duplicate key {key!r}", problem_mark=key_node.start_mark
            )
        result[key] = _construct(loader, value_node)
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
    if isinstance(value, (int, float)):
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


def from_dict(cls: type[T], data: Any, *, source: str, path: str = "",
              errors: list[ConfigError] | None = None) -> T:
    """Build the frozen dataclass ``cls`` from a mapping, strictly.

    Without ``errors`` the first problem raises. With a list, every problem is appended
    to it (each with its file, line and key path) and a key that is wrong keeps its
    default, so that ``config check`` can report them all at once.
    """
    def fail(error: ConfigError, cause: BaseException | None = None) -> None:
        if errors is None:
            raise error from cause
        errors.append(error)

    if data is None:
        data = {}
    if not isinstance(data, dict):
        fail(ConfigError(f"{path or 'top level'}: expected a mapping, got "
                         f"{type(data).__name__}", location=_where(source, data, None)))
        data = {}
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"{cls} is not a dataclass")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = type_hints(cls)
    known = ", ".join(sorted(fields))
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        name = key.replace("-", "_")
        if name not in fields:
            fail(ConfigError(f"unknown key '{_join(path, key)}' (known here: {known})",
                             location=_where(source, data, key)))
            continue
        try:
            kwargs[name] = _convert(hints[name], value, source=source, path=_join(path, key),
                                    errors=errors)
        except ConfigError as e:
            error = e
            if e.location is None or e.location.line is None:
                # a value with no position of its own (a list, a scalar): its key's line
                error = ConfigError(e.message, location=_where(source, data, key))
                error.__cause__ = e
            if errors is None:
                raise error from (None if error is e else e)
            errors.append(error)
        except (ValueError, TypeError) as e:
            fail(ConfigError(f"'{_join(path, key)}': {e}",
                             location=_where(source, data, key)), e)
    try:
        return cls(**kwargs)
    except (TypeError, ConfigError) as e:
        error = e if isinstance(e, ConfigError) else ConfigError(
            f"{path or 'top level'}: {e}", location=_where(source, data, None))
        if errors is None:
            raise error from (None if error is e else e)
        errors.append(error)
        try:
            return cls()
        except (TypeError, ConfigError):   # a required key (no valid default): nothing
            return None  # type: ignore[return-value]


def type_hints(cls: type) -> dict[str, Any]:
    """``typing.get_type_hints``, also on Python 3.9 for annotations written ``X | None``
    (strings under ``from __future__ import annotations``): there ``|`` is read as Union."""
    try:
        return get_type_hints(cls)
    except TypeError:
        if sys.version_info >= (3, 10):
            raise
    hints: dict[str, Any] = {}
    for klass in reversed(cls.__mro__):
        namespace = dict(vars(sys.modules[klass.__module__]))
        for name, annotation in vars(klass).get("__annotations__", {}).items():
            hints[name] = (_eval_annotation(annotation, namespace)
                           if isinstance(annotation, str) else annotation)
    return hints


class _UnionOfBitOr(ast.NodeTransformer):
    def visit_BinOp(self, node: ast.BinOp) -> ast.AST:
        self.generic_visit(node)
        if not isinstance(node.op, ast.BitOr):
            return node
        union = ast.Subscript(value=ast.Name(id="__sisguard_union__", ctx=ast.Load()),
                              slice=ast.Tuple(elts=[node.left, node.right], ctx=ast.Load()),
                              ctx=ast.Load())
        return ast.copy_location(union, node)


def _eval_annotation(annotation: str, namespace: dict[str, Any]) -> Any:
    tree = ast.fix_missing_locations(_UnionOfBitOr().visit(ast.parse(annotation, mode="eval")))
    code = compile(tree, "<annotation>", "eval")
    # the annotation is our own source code (a dataclass field), never input
    return eval(code, {**namespace, "__sisguard_union__": Union})


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _convert(hint: Any, value: Any, *, source: str, path: str,
             errors: list[ConfigError] | None = None) -> Any:
    origin = get_origin(hint)
    if origin is Union or (_UNION_TYPE is not None and origin is _UNION_TYPE):
        args = [a for a in get_args(hint) if a is not type(None)]
        if value is None:
            return None
        # a mapping goes to the dataclass branch (e.g. `str | WatchPath`), else the first
        classes = [a for a in args if dataclasses.is_dataclass(a)]
        if isinstance(value, dict) and classes:
            return _convert(classes[0], value, source=source, path=path, errors=errors)
        scalars = [a for a in args if not dataclasses.is_dataclass(a)] or args
        return _convert(scalars[0], value, source=source, path=path, errors=errors)
    if hint is Any:
        return value
    if dataclasses.is_dataclass(hint) and isinstance(hint, type):
        return from_dict(hint, value, source=source, path=path, errors=errors)
    if origin is tuple:
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list):
            raise TypeError(f"expected a list, got {type(value).__name__}")
        (item,) = get_args(hint)[:1]
        return tuple(_convert(item, v, source=source, path=f"{path}[{i}]", errors=errors)
                     for i, v in enumerate(value))
    if origin is dict or origin is typing.Mapping:
        if not isinstance(value, dict):
            raise TypeError(f"expected a mapping, got {type(value).__name__}")
        _, vt = get_args(hint)
        return {str(k): _convert(vt, v, source=source, path=f"{path}.{k}", errors=errors)
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
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TypeError(f"expected a number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise TypeError(f"expected a string, got {type(value).__name__}")
        return str(value)
    return value
