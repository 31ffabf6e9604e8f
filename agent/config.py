"""The agent's configuration: one YAML file, frozen dataclasses, unknown keys refused."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common.errors import ConfigError, Location
from common.yamlconf import Duration, Size, from_dict, load_mapping


@dataclass(frozen=True)
class SpoolConfig:
    max_bytes: Size = Size(512 * 1024 * 1024)
    synchronous: str = "full"   # full: survives power loss; normal: survives agent crash
    queue_events: int = 20_000  # between sensors and the spool writer
    linger: Duration = Duration(0.1)  # gather events this long into one commit


@dataclass(frozen=True)
class ShipperConfig:
    batch_events: int = 500
    batch_bytes: Size = Size(2 * 1024 * 1024)
    window: int = 4
    backoff_initial: Duration = Duration(0.5)
    backoff_max: Duration = Duration(30.0)
    linger: Duration = Duration(0.1)   # wait this long for a small batch to fill


@dataclass(frozen=True)
class AgentConfig:
    state_dir: Path = Path("/var/lib/sisguard-agent")
    collectors: tuple[str, ...] = ()          # default: those given at enrollment
    log_level: str = "info"
    heartbeat_interval: Duration = Duration(30.0)
    sensors: tuple[str, ...] = ("fim", "process", "network", "auth", "inventory")
    spool: SpoolConfig = field(default_factory=SpoolConfig)
    shipper: ShipperConfig = field(default_factory=ShipperConfig)
    # per-sensor settings, checked against each sensor's own config class
    sensor: dict[str, Any] = field(default_factory=dict)


def load_config(path: Path | None, overrides: dict[str, Any]) -> tuple[AgentConfig, dict[str, Any]]:
    """Returns the config and the per-sensor config objects (by sensor name)."""
    from agent.sensors import REGISTRY

    source = str(path) if path else "<flags>"
    data: dict[str, Any] = load_mapping(path) if path else {}  # keeps key positions
    for key, value in overrides.items():
        if value is None:
            continue
        if key == "sensor":
            merged = dict(data.get("sensor") or {})
            for name, settings in value.items():
                merged[name] = {**(merged.get(name) or {}), **settings}
            data["sensor"] = merged
        else:
            data[key] = value
    config = from_dict(AgentConfig, data, source=source)
    unknown = [name for name in config.sensors if name not in REGISTRY]
    if unknown:
        raise ConfigError(f"sensors: unknown sensor '{unknown[0]}' "
                          f"(known: {', '.join(sorted(REGISTRY))})", location=Location(source))
    sensor_configs: dict[str, Any] = {}
    raw = data.get("sensor") or {}
    for name in raw:
        if name not in REGISTRY:
            raise ConfigError(f"unknown key 'sensor.{name}' (known sensors: "
                              f"{', '.join(sorted(REGISTRY))})", location=Location(source))
    for name in config.sensors:
        _, config_cls = REGISTRY[name]
        sensor_configs[name] = from_dict(config_cls, raw.get(name), source=source,
                                         path=f"sensor.{name}")
    return config, sensor_configs
