"""Sensors: each watches one OS resource and emits ECS documents.

The registry below is the one place that names them; ``--sensors fim,process`` picks
from it. It is lazy: it holds ``"module:Class"`` strings, and a sensor's module is imported
only when that sensor is configured (``sensor_class`` / ``config_class``). Importing this
package imports no sensor: the FIM hash helpers (``python -I -m agent.sensors.fim.hashing``)
start with the standard library and the safe-read helpers only.

Adding a sensor: write a module with a ``Sensor`` subclass (``agent.sensors.base``) and a
frozen config dataclass, and add one ``register`` line here (docs/agent-layout.md).
"""

from __future__ import annotations

import dataclasses
import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from agent.sensors.base import Sensor


@dataclass(frozen=True)
class Entry:
    """Where a sensor and its config dataclass live: ``"package.module:Class"``."""

    sensor: str
    config: str


REGISTRY: dict[str, Entry] = {}


def register(name: str, sensor: str, config: str) -> None:
    if name in REGISTRY:
        raise ValueError(f"sensor {name!r} registered twice")
    for what, target in (("sensor", sensor), ("config", config)):
        module, _, attr = target.partition(":")
        if not module or not attr:
            raise ValueError(f"sensor {name!r}: {what} {target!r} is not 'module:Class'")
    REGISTRY[name] = Entry(sensor, config)


def _load(name: str, what: str) -> object:
    entry = REGISTRY.get(name)
    if entry is None:
        raise KeyError(f"unknown sensor {name!r} (known: {', '.join(sorted(REGISTRY))})")
    target = entry.sensor if what == "sensor" else entry.config
    module, _, attr = target.partition(":")
    try:
        return getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as e:
        raise ImportError(f"sensor {name!r}: cannot load its {what} {target!r}: {e}") from e


def sensor_class(name: str) -> type[Sensor]:
    """The ``Sensor`` subclass registered as ``name`` (its module is imported now)."""
    from agent.sensors.base import Sensor

    cls = _load(name, "sensor")
    if not (isinstance(cls, type) and issubclass(cls, Sensor)):
        raise TypeError(f"sensor {name!r}: {REGISTRY[name].sensor} is not a Sensor subclass")
    return cls


def config_class(name: str) -> type:
    """The frozen config dataclass of the sensor registered as ``name``."""
    cls = _load(name, "config")
    if not (isinstance(cls, type) and dataclasses.is_dataclass(cls)):
        raise TypeError(f"sensor {name!r}: {REGISTRY[name].config} is not a dataclass")
    return cls


register("fim", "agent.sensors.fim.sensor:FimSensor", "agent.sensors.fim.config:FimConfig")
register("process", "agent.sensors.process:ProcessSensor", "agent.sensors.process:ProcessConfig")
register("network", "agent.sensors.network:NetworkSensor", "agent.sensors.network:NetworkConfig")
register("auth", "agent.sensors.auth:AuthSensor", "agent.sensors.auth:AuthConfig")
register("inventory", "agent.sensors.inventory:InventorySensor",
         "agent.sensors.inventory:InventoryConfig")
register("weblog", "agent.sensors.weblog:WebLogSensor",  # not in the default sensors list
         "agent.sensors.weblog:WebLogConfig")

__all__ = ["REGISTRY", "Entry", "config_class", "register", "sensor_class"]
