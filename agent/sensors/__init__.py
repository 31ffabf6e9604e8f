"""Sensors: each watches one OS resource and emits ECS documents.

The registry below is the one place that names them; ``--sensors fim,process`` picks
from it. Adding a sensor: write a module with a ``Sensor`` subclass and a frozen config
dataclass, and add it here.
"""

from __future__ import annotations

from agent.sensors.auth import AuthConfig, AuthSensor
from agent.sensors.base import Sensor, SensorContext
from agent.sensors.fim.sensor import FimConfig, FimSensor
from agent.sensors.inventory import InventoryConfig, InventorySensor
from agent.sensors.network import NetworkConfig, NetworkSensor
from agent.sensors.process import ProcessConfig, ProcessSensor
from agent.sensors.weblog import WebLogConfig, WebLogSensor

REGISTRY: dict[str, tuple[type[Sensor], type]] = {}


def register(name: str, sensor: type[Sensor], config: type) -> None:
    if name in REGISTRY:
        raise ValueError(f"sensor {name!r} registered twice")
    REGISTRY[name] = (sensor, config)


register("fim", FimSensor, FimConfig)
register("process", ProcessSensor, ProcessConfig)
register("network", NetworkSensor, NetworkConfig)
register("auth", AuthSensor, AuthConfig)
register("inventory", InventorySensor, InventoryConfig)
register("weblog", WebLogSensor, WebLogConfig)  # not in the default sensors list

__all__ = ["REGISTRY", "Sensor", "SensorContext", "register"]
