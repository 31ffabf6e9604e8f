"""The output registry: an output type's name -> its class and its config dataclass.

An output module registers itself when imported::

    @register("syslog", SyslogConfig)
    class SyslogOutput(Output):
        def __init__(self, name: str, config: SyslogConfig, context: OutputContext): ...

``BUILTIN`` names the module of each type shipped here, so that a type is imported only
when a config uses it (the Elasticsearch client is not loaded for an archive-only
collector). Registering a name twice is an error: two types would answer to one name.
A collector config names its upstream outputs under ``outputs:``, each with a name of
its own and a ``type``::

    outputs:
      soc:                # the name: logs, metrics and the queue directory use it
        type: syslog
        host: soc.example.gov.vn
"""

from __future__ import annotations

import copy
import importlib
from collections.abc import Callable, Mapping, MutableMapping
from dataclasses import dataclass, is_dataclass
from pathlib import Path
from typing import Any, TypeVar

from collector.outputs.base import Output
from collector.records import Record
from common.errors import ConfigError
from common.yamlconf import from_dict

O = TypeVar("O", bound=type[Output])  # noqa: E741

# type name -> the module that registers it
BUILTIN: dict[str, str] = {
    "archive": "collector.outputs.archive",
    "console": "collector.outputs.console",
    "elasticsearch": "collector.outputs.elasticsearch",
    "https": "collector.outputs.https",
    "syslog": "collector.outputs.syslog",
}


@dataclass(frozen=True)
class OutputContext:
    """What the collector gives every output it builds."""

    data_dir: Path      # the collector's data directory: an output keeps its state under
                        # data_dir / "outputs" / <name>
    # publishes records the collector makes itself (an alert that an output dropped
    # events, say) through the one publisher, to every output; raises OutputUnavailable
    # while they cannot be stored. None where nothing can take them (a unit test).
    emit: Callable[[list[Record]], None] | None = None


@dataclass(frozen=True)
class OutputType:
    name: str
    output: type[Output]
    config: type[Any]


_TYPES: dict[str, OutputType] = {}


def register(name: str, config: type[Any]) -> Callable[[O], O]:
    """Class decorator: ``name`` is built as ``cls(instance name, config, context)``."""
    if not is_dataclass(config):
        raise TypeError(f"output type {name!r}: {config!r} is not a dataclass")

    def decorate(cls: O) -> O:
        known = _TYPES.get(name)
        if known is not None and known.output is not cls:
            raise ValueError(f"output type {name!r} is registered twice: by "
                             f"{known.output.__module__}.{known.output.__qualname__} and "
                             f"{cls.__module__}.{cls.__qualname__}")
        _TYPES[name] = OutputType(name, cls, config)
        return cls

    return decorate


def output_type(name: str) -> OutputType:
    """The registered type ``name``, importing its module when it is a built-in one."""
    if name not in _TYPES and name in BUILTIN:
        importlib.import_module(BUILTIN[name])
    try:
        return _TYPES[name]
    except KeyError:
        raise ConfigError(f"unknown output type {name!r} (known: "
                          f"{', '.join(known_types())})") from None


def known_types() -> list[str]:
    return sorted(set(BUILTIN) | set(_TYPES))


@dataclass(frozen=True)
class OutputSpec:
    """One entry of ``outputs:``, its config checked."""

    name: str
    type: OutputType
    config: Any


def parse_outputs(section: Mapping[str, Any] | None, *, source: str,
                  errors: list[ConfigError] | None = None) -> list[OutputSpec]:
    """``outputs:`` of a collector config: each entry's ``type`` and its own keys,
    checked strictly against that type's config dataclass (file, line and key path in
    every error; with ``errors`` every problem is collected instead of raised)."""
    specs: list[OutputSpec] = []
    for name, body in (section or {}).items():
        path = f"outputs.{name}"
        try:
            if not isinstance(body, MutableMapping) or not isinstance(body.get("type"), str):
                raise ConfigError(f"{path}: needs 'type' (one of {', '.join(known_types())})")
            kind = output_type(body["type"])
            rest = copy.copy(body)   # a PositionedDict stays one: errors keep their line
            rest.pop("type")
            config = from_dict(kind.config, rest, source=source, path=path, errors=errors)
        except ConfigError as e:
            if errors is None:
                raise
            errors.append(e)
            continue
        specs.append(OutputSpec(str(name), kind, config))
    return specs
