"""What loading produces: compiled detection rules, correlation rules, load errors."""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from collector.detection.expr import Expr
from collector.detection.logsources import LogsourceKey
from collector.detection.matcher import EventView
from collector.detection.prefilter import Anchor
from common.errors import Location, SisguardError


class RuleLoadError(SisguardError):
    """A rule, filter or test case that could not be loaded; says where."""

    def __init__(self, location: Location, message: str) -> None:
        super().__init__(message, location=location)

    @property
    def where(self) -> Location:
        assert self.location is not None
        return self.location


@dataclass(frozen=True)
class RuleMeta:
    """What an alert says about the rule that raised it."""

    id: str
    title: str
    name: str | None = None
    description: str = ""
    references: tuple[str, ...] = ()
    level: str | None = None
    tags: tuple[str, ...] = ()
    ruleset: str = "sisguard"
    version: str | None = None


@dataclass(frozen=True)
class TestCase:
    """One case of a rule's ``tests:`` list."""

    __test__ = False  # not a pytest class

    name: str
    events: tuple[Mapping[str, Any], ...]
    alerts: int
    location: Location


# Bumped whenever a loaded rule's ``match`` is replaced (tests do this to inject faults):
# the engine then regenerates its code and calls that rule's new ``match``.
REVISION = [0]


@dataclass
class DetectionRule:
    meta: RuleMeta
    location: Location
    keys: tuple[LogsourceKey, ...]
    match: Callable[[EventView], bool]
    mapping: Mapping[str, str]
    fingerprint: str
    tests: tuple[TestCase, ...] = ()
    generate: bool = True  # False when only correlations use its matches
    anchor: Anchor | None = None  # for the prefilter
    condition: Expr | None = None  # what match() evaluates; the engine generates code from it

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "match" and "match" in self.__dict__:  # replaced after construction
            object.__setattr__(self, "condition", None)
            REVISION[0] += 1
        object.__setattr__(self, name, value)

    @property
    def path(self) -> str:
        return self.location.path


# The sender's identity (set by the collector from the agent's certificate): linking puts
# it first in every correlation's group key, so no agent can feed another's groups.
IDENTITY_PATH = "agent.id"


class CorrelationType(enum.Enum):
    EVENT_COUNT = "event_count"
    VALUE_COUNT = "value_count"
    TEMPORAL = "temporal"
    TEMPORAL_ORDERED = "temporal_ordered"


@dataclass
class CorrelationRule:
    meta: RuleMeta
    location: Location
    type: CorrelationType
    references: tuple[str, ...]  # ids or names of rules / correlations, in order
    group_by: tuple[str, ...]
    timespan: float  # seconds
    op: str  # gt, gte, lt, lte, eq
    count: float
    value_field: str | None  # value_count: the field whose distinct values count
    aliases: Mapping[str, Mapping[str, str]]  # alias -> reference -> field
    fingerprint: str
    generate: bool = False
    tests: tuple[TestCase, ...] = ()
    # Filled by linking: reference -> ECS paths of the group key (IDENTITY_PATH, then the
    # rule's group-by fields) and of the value field.
    group_paths: dict[str, tuple[str, ...]] = field(default_factory=dict)
    value_paths: dict[str, str] = field(default_factory=dict)

    @property
    def path(self) -> str:
        return self.location.path


Rule = DetectionRule | CorrelationRule


@dataclass
class LoadResult:
    rules: list[Rule] = field(default_factory=list)
    errors: list[RuleLoadError] = field(default_factory=list)

    @property
    def detections(self) -> list[DetectionRule]:
        return [r for r in self.rules if isinstance(r, DetectionRule)]

    @property
    def correlations(self) -> list[CorrelationRule]:
        return [r for r in self.rules if isinstance(r, CorrelationRule)]
