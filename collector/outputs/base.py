"""The interface every output implements (like libbeat's outputs).

``publish(records)`` returns only when every record has ended in exactly one of:
stored, duplicate (already stored: counts as stored), or dead-lettered (stored aside
with its reason). When the output cannot take them now it raises ``OutputUnavailable``
and nothing of the batch counts as stored: the agent keeps the events and resends.
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
    name: str

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
