"""The agent's configuration: one YAML file, frozen dataclasses, unknown keys refused."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.webroots import DEFAULT_CONFIGS, MODES
from common.errors import ConfigError, Location
from common.yamlconf import Duration, Size, from_dict, load_mapping


@dataclass(frozen=True)
class SpoolConfig:
    max_bytes: Size = Size(512 * 1024 * 1024)  # disk bound; oldest dropped first, counted
    synchronous: str = "full"   # full: survives power loss; normal: survives agent crash
    queue_events: int = 20_000  # between sensors and the spool writer
    linger: Duration = Duration(0.1)  # gather events this long into one commit


@dataclass(frozen=True)
class ShipperConfig:
    batch_events: int = 500     # events per batch (the collector may ask for fewer)
    batch_bytes: Size = Size(2 * 1024 * 1024)  # bytes per batch
    window: int = 4             # batches in flight before an ack
    backoff_initial: Duration = Duration(0.5)  # first reconnect delay (jittered, doubling)
    backoff_max: Duration = Duration(30.0)     # longest reconnect delay
    linger: Duration = Duration(0.1)   # wait this long for a small batch to fill


@dataclass(frozen=True)
class AgentConfig:
    state_dir: Path = Path("/var/lib/sisguard-agent")  # key, certificate, spool, baseline
    collectors: tuple[str, ...] = ()          # default: those given at enrollment
    log_level: str = "info"                   # debug, info, warning, error
    heartbeat_interval: Duration = Duration(30.0)  # health report to the collector
    sensors: tuple[str, ...] = ("fim", "process", "network", "auth", "inventory")  # to run
    spool: SpoolConfig = field(default_factory=SpoolConfig)   # the on-disk queue
    shipper: ShipperConfig = field(default_factory=ShipperConfig)  # batches to the collector
    # per-sensor settings, checked against each sensor's own config class
    sensor: dict[str, Any] = field(default_factory=dict)
    # auto: watch the web roots the nginx/Apache configs name (those that exist); off
    # (YAML reads a bare `off` as false: taken as "off")
    web_roots: Any = "auto"
    web_server_configs: tuple[str, ...] = DEFAULT_CONFIGS  # main files ("nginx:PATH" ok)
    web_roots_poll: Duration = Duration(60.0)   # re-read the configs this often

    def __post_init__(self) -> None:
        if self.web_roots is False:
            object.__setattr__(self, "web_roots", "off")
        if not isinstance(self.web_roots, str) or self.web_roots not in MODES:
            raise ConfigError(f"web_roots: {self.web_roots!r} (allowed: {', '.join(MODES)})",
                              location=Location("<config>"))


def load_config(path: Path | None, overrides: dict[str, Any]) -> tuple[AgentConfig, dict[str, Any]]:
    """Returns the config and the per-sensor config objects (by sensor name)."""
    return _build(path, overrides, errors=None)


def check_config(path: Path) -> list[ConfigError]:
    """Every problem of a config file (syntax, keys, values, sensors), each with its place."""
    errors: list[ConfigError] = []
    try:
        _build(path, {}, errors=errors)
    except ConfigError as e:   # unreadable file or invalid YAML: nothing further to check
        errors.append(e)
    return errors


def _build(path: Path | None, overrides: dict[str, Any], *,
           errors: list[ConfigError] | None) -> tuple[AgentConfig, dict[str, Any]]:
    from agent.sensors import REGISTRY, config_class

    source = str(path) if path else "<flags>"
    data: Any = load_mapping(path) if path else {}   # keeps the keys' positions
    for key, value in overrides.items():
        if value is None or not isinstance(data, dict):
            continue
        if key == "sensor":
            merged = dict(data.get("sensor") or {})
            for name, settings in value.items():
                merged[name] = {**(merged.get(name) or {}), **settings}
            data["sensor"] = merged
        else:
            data[key] = value
    config = from_dict(AgentConfig, data, source=source, errors=errors)
    problems: list[ConfigError] = []
    unknown = [name for name in config.sensors if name not in REGISTRY]
    for name in unknown:
        problems.append(ConfigError(f"sensors: unknown sensor '{name}' "
                                    f"(known: {', '.join(sorted(REGISTRY))})",
                                    location=_where(source, data, "sensors")))
    raw = data.get("sensor") if isinstance(data, dict) else None
    raw = raw if isinstance(raw, dict) else {}
    for name in raw:
        if name not in REGISTRY:
            problems.append(ConfigError(f"unknown key 'sensor.{name}' (known sensors: "
                                        f"{', '.join(sorted(REGISTRY))})",
                                        location=_where(source, raw, name)))
    if problems:
        if errors is None:
            raise problems[0]
        errors.extend(problems)
    sensor_configs: dict[str, Any] = {}
    for name in config.sensors:
        if name not in REGISTRY:
            continue
        sensor_configs[name] = from_dict(config_class(name), raw.get(name), source=source,
                                         path=f"sensor.{name}", errors=errors)
    return config, sensor_configs


def _where(source: str, data: Any, key: str) -> Location:
    positions = getattr(data, "positions", {})
    line_col = positions.get(key)
    return Location(source, *line_col) if line_col else Location(source)
