"""The interface every sensor implements, and the health it reports.

A sensor owns one OS resource (an inotify instance, a netlink socket, a log file) and
runs in its own thread(s). It pushes documents through ``context.emit``; it never
blocks for long there (the queue is bounded and the spool writer drains it). Errors on
one event are counted and reported in health, never fatal; a permission error becomes a
health event (``context.report_error``), never silence.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from agent.ecs import Document
from agent.timer import Timer

Emit = Callable[[Document], None]


@dataclass
class SensorHealth:
    """Counters a sensor keeps; copied into every heartbeat."""

    name: str
    events: int = 0
    errors: int = 0
    mode: str = ""
    last_error: str = ""
    details: dict[str, str] = field(default_factory=dict)  # sent in every heartbeat
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def count_event(self) -> None:
        with self.lock:
            self.events += 1

    def count_error(self, message: str) -> None:
        with self.lock:
            self.errors += 1
            self.last_error = message[:500]


@dataclass(frozen=True)
class SensorContext:
    """What a sensor gets from the agent."""

    emit: Emit                       # push one ECS document (thread-safe)
    health: SensorHealth
    state_dir: Path                  # a directory of its own for persistent state
    report_error: Callable[[str, dict[str, Any]], None]  # emits an agent health event
    # wait (at most the seconds given) until every document emitted so far is in the spool,
    # or counted as dropped; False on timeout. A sensor calls it before it commits state
    # that says "reported" (FIM's baseline), so that a crash cannot lose the report.
    sync: Callable[[float], bool] = field(default=lambda timeout: True)
    # the agent's one thread for periodic jobs (agent/timer.py): a polling sensor schedules
    # its poll there instead of sleeping in a thread of its own
    timer: Timer = field(default_factory=lambda: Timer(name="sensor-timer"))


class Sensor(ABC):
    """Base class. Subclasses set ``name`` and take ``(config, context)``."""

    name: ClassVar[str]

    def __init__(self, config: Any, context: SensorContext) -> None:
        self.config = config
        self.context = context
        self._stop = threading.Event()

    @abstractmethod
    def start(self) -> None:
        """Start the sensor's thread(s) and return."""

    def stop(self) -> None:
        """Ask the sensor to stop; ``join`` waits for it."""
        self._stop.set()

    @abstractmethod
    def join(self, timeout: float | None = None) -> None:
        """Wait for the sensor's threads to end."""

    def emit(self, document: Document) -> None:
        self.context.health.count_event()
        self.context.emit(document)
