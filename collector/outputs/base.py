"""The interface every output implements (like libbeat's outputs).

``publish(records)`` returns only when every record has ended in exactly one of:
stored, duplicate (already stored: counts as stored), or dead-lettered (stored aside
with its reason). When the output cannot take them now it raises ``OutputUnavailable``
and nothing of the batch counts as stored: the agent keeps the events and resends.
The publisher (``collector/publisher.py``) calls it, retries it, and asks an output for
what only some can do (dead letters, high-water marks, exact duplicates) by attribute.
``docs/outputs.md`` says how to add one.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

from collector.records import Kind, Outcome, PublishResult, Record
from common.errors import SisguardError

__all__ = ["Kind", "Outcome", "Output", "OutputUnavailable", "PublishResult", "Record"]


class OutputUnavailable(SisguardError):
    """The output cannot durably take the batch now; do not ack."""


class Output(ABC):
    name: str       # unique among the collector's outputs: logs and metrics say it

    @classmethod
    def from_config(cls, name: str, config: Any, context: Any) -> Output:
        """Build from the registry (``collector/outputs/registry.py``): ``context`` is an
        ``OutputContext``. The default is ``cls(name, config, context)``."""
        return cls(name, config, context)  # type: ignore[call-arg]

    @abstractmethod
    def connect(self) -> None:
        """Prepare (create files, install templates). May raise OutputUnavailable."""

    @abstractmethod
    def publish(self, records: Sequence[Record]) -> PublishResult:
        """Store every record durably, or raise OutputUnavailable."""

    @abstractmethod
    def close(self) -> None:
        """Flush and release resources."""

    def health(self) -> dict[str, Any]:
        return {}
