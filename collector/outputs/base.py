"""The interface every output implements (like libbeat's outputs).

``publish(records)`` returns only when every record has ended in exactly one of:
stored, duplicate (already stored: counts as stored), or dead-lettered (stored aside
with its reason). When the output cannot take them now it raises ``OutputUnavailable``
and nothing of the batch counts as stored: the agent keeps the events and resends.
"""

from __future__ import annotations

import enum
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from common.errors import SisguardError


class Kind(enum.Enum):
    EVENT = "events"
    ALERT = "alerts"


class Outcome(enum.Enum):
    STORED = "stored"
    DUPLICATE = "duplicate"
    DEAD_LETTERED = "dead_lettered"


@dataclass(frozen=True)
class Record:
    """One document on its way out, with the id that makes re-sending harmless."""

    kind: Kind
    doc_id: str                # events: <agent id>-<seq>; alerts: from rule id + event ids
    document: dict[str, Any]
    agent_id: str = ""
    seq: int = 0               # 0 for alerts


@dataclass
class PublishResult:
    outcomes: list[Outcome] = field(default_factory=list)
    reasons: dict[int, str] = field(default_factory=dict)  # index -> why dead-lettered

    def count(self, outcome: Outcome) -> int:
        return sum(1 for o in self.outcomes if o is outcome)


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
