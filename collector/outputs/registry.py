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

``configured_outputs`` builds every output of a collector config in one place, in the
order the publisher uses them: the archive (``archive:``), Elasticsearch
(``elasticsearch:``), the console (``print_alerts``), then ``outputs:`` in file order.
An instance name is used once (``outputs.archive`` while the archive is on: an error).
"""

from __future__ import annotations

import copy
import importlib
from collections.abc import Callable, Mapping, MutableMapping
from dataclasses import dataclass, is_dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from collector.outputs.base import Output
from collector.records import Record
from common.errors import ConfigError, Location
from common.yamlconf import PositionedDict, from_dict

if TYPE_CHECKING:
    from collector.config import CollectorConfig

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

    def build(self, name: str, config: Any, context: OutputContext) -> Output:
        return self.output.from_config(name, config, context)


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
                raise ConfigError(f"{path}: needs 'type' (one of {', '.join(known_types())})",
                                  location=_where(source, section, name, body))
            try:
                kind = output_type(body["type"])
            except ConfigError as e:
                raise ConfigError(f"{path}.type: {e.message}",
                                  location=_where(source, body, "type")) from e
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


def _where(source: str, mapping: Any, key: str, value: Any = None) -> Location:
    """file:line:col of ``key`` when the mapping came from a YAML file (else of where
    ``value``, a mapping, begins)."""
    if isinstance(mapping, PositionedDict) and key in mapping.positions:
        line, column = mapping.positions[key]
        return Location(source, line, column)
    if isinstance(value, PositionedDict) and value.start:
        return Location(source, value.start[0], value.start[1])
    return Location(source)


def builtin_specs(config: CollectorConfig) -> list[OutputSpec]:
    """The outputs the top-level sections turn on: archive, elasticsearch, console."""
    specs: list[OutputSpec] = []
    if config.archive_enabled:
        specs.append(OutputSpec("archive", output_type("archive"), config.archive))
    if config.elasticsearch.url:
        specs.append(OutputSpec("elasticsearch", output_type("elasticsearch"),
                                config.elasticsearch))
    if config.print_alerts:
        console = output_type("console")
        specs.append(OutputSpec("console", console, console.config()))
    return specs


def configured_outputs(config: CollectorConfig, context: OutputContext, *,
                       source: str = "outputs") -> list[Output]:
    """Every output of the config, built (not connected), in publishing order."""
    specs = builtin_specs(config) + parse_outputs(config.outputs, source=source)
    seen: set[str] = set()
    for spec in specs:
        if spec.name in seen:
            raise ConfigError(f"{source}: outputs.{spec.name}: the name {spec.name!r} is "
                              f"already an output's (the {spec.name} section is on): "
                              f"choose another")
        seen.add(spec.name)
    return [spec.type.build(spec.name, spec.config, context) for spec in specs]
