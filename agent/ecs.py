"""Building ECS documents.

Every sensor builds its documents with ``new_event``; the spool later adds ``event.id``
(derived from the agent id and the sequence number) and ``event.sequence``.
"""

from __future__ import annotations

import datetime as dt
import socket
from collections.abc import Sequence
from typing import Any

Document = dict[str, Any]

ECS_VERSION = "8.17.0"


def timestamp(when: float | None = None) -> str:
    """An ISO-8601 UTC timestamp with microseconds, as ECS wants in @timestamp."""
    moment = (dt.datetime.now(dt.timezone.utc) if when is None
              else dt.datetime.fromtimestamp(when, dt.timezone.utc))
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def new_event(
    dataset: str,
    *,
    kind: str = "event",
    category: Sequence[str],
    type: Sequence[str],
    action: str,
    outcome: str | None = None,
    when: float | None = None,
) -> Document:
    """The common skeleton: @timestamp, event.*, ecs.version, host.hostname."""
    event: dict[str, Any] = {
        "kind": kind,
        "category": list(category),
        "type": list(type),
        "action": action,
        "module": "sisguard",
        "dataset": dataset,
    }
    if outcome is not None:
        event["outcome"] = outcome
    return {
        "@timestamp": timestamp(when),
        "event": event,
        "ecs": {"version": ECS_VERSION},
        "host": {"hostname": socket.gethostname()},
    }
