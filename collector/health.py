"""Agent liveness from heartbeats."""

from __future__ import annotations

import time

from collector.store import AgentRecord

DEFAULT_INTERVAL = 30.0


def agent_status(agent: AgentRecord, *, offline_after: float = 3, now: float | None = None) -> str:
    """'revoked', 'never seen', 'online' or 'offline' (silent for offline_after intervals)."""
    if agent.revoked:
        return "revoked"
    if agent.last_seen is None:
        return "never seen"
    interval = DEFAULT_INTERVAL
    if agent.heartbeat and agent.heartbeat.get("interval_seconds"):
        interval = float(agent.heartbeat["interval_seconds"])
    silent = (now or time.time()) - agent.last_seen
    return "offline" if silent > offline_after * interval else "online"
