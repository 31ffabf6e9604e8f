"""What flows through the collector: a record (one document on its way out) and what
became of it. Neutral ground: the pipeline, the publisher and every output use these,
and none of them owns them.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any


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
