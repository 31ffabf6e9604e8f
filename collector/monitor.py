"""Background jobs of the collector: agent liveness, and the health file.

An agent silent for ``offline_after`` heartbeat intervals gets an ``agent_offline``
event (dataset ``sisguard.agent``), which goes through detection and every output like
any other event: the shipped rule ``agent_offline`` turns it into an alert (an attacker
stopping the agent is itself an event). Without rules, a built-in alert is raised.
The records go through the one publisher (``collector/publisher.py``): while an output
cannot take them they wait here, one delivery per agent, and are tried again every round
(detection is not run again; an output that stored them is not sent them again), and the
agent is marked offline only once every output has them.
The health file (``DATA_DIR/health.json``) is what ``sisguard-collector status`` shows.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from collector.health import agent_status
from collector.publisher import Delivery, Publisher
from collector.records import Kind, Record
from collector.store import AgentRecord, Store
from common.logs import get_logger

log = get_logger("sisguard.collector.monitor")


def _iso(t: float) -> str:
    return dt.datetime.fromtimestamp(t, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def offline_event(agent: AgentRecord, now: float) -> dict[str, Any]:
    last = agent.last_seen or agent.enrolled
    return {
        "@timestamp": _iso(now),
        "event": {"kind": "event", "category": ["host"], "type": ["info"],
                  "action": "agent_offline", "module": "sisguard", "dataset": "sisguard.agent",
                  "id": f"{agent.agent_id}-offline-{int(last)}", "ingested": _iso(now)},
        "message": f"agent {agent.hostname} silent since {_iso(last)}",
        "host": {"name": agent.hostname},
        "agent": {"id": agent.agent_id, "name": agent.hostname, "type": "sisguard",
                  "version": agent.version},
        "organization": {"id": agent.organization_id, "name": agent.organization},
        "sisguard": {"agent": {"status": "offline", "last_seen": _iso(last)}},
    }


def builtin_alert(event: dict[str, Any]) -> dict[str, Any]:
    alert: dict[str, Any] = json.loads(json.dumps(event))
    event_id = event["event"]["id"]
    alert["event"] = {"kind": "alert", "category": ["host"], "type": ["info"],
                      "action": "agent_offline", "module": "sisguard",
                      "dataset": "sisguard.alert", "severity": 47,
                      "id": hashlib.sha256(f"builtin-agent-offline\n{event_id}".encode())
                      .hexdigest()}
    alert["rule"] = {"id": "builtin-agent-offline", "name": "Sisguard Agent Offline",
                     "ruleset": "sisguard-builtin"}
    alert["sisguard"]["alert"] = {"level": "medium", "event_ids": [event_id]}
    return alert


class Monitor(threading.Thread):
    def __init__(self, *, store: Store, publisher: Publisher,
                 detect: Callable[[dict[str, Any]], list[dict[str, Any]]] | None,
                 offline_after: float, health: Callable[[], dict[str, Any]],
                 health_path: Path, period: float = 2.0) -> None:
        super().__init__(name="monitor", daemon=True)
        self.store = store
        self.publisher = publisher
        # agent id -> (its offline records not yet stored by every output, since when)
        self.pending: dict[str, tuple[Delivery, float]] = {}
        self.detect = detect
        self.offline_after = offline_after
        self.health = health
        self.health_path = health_path
        self.period = period
        self._halt = threading.Event()

    def stop(self) -> None:
        self._halt.set()

    def run(self) -> None:
        while not self._halt.wait(self.period):
            try:
                self.check_agents(time.time())
            except Exception:  # a background job never dies
                log.exception("agent liveness check failed")
            try:
                self.write_health()
            except Exception:
                log.exception("health file not written")

    def check_agents(self, now: float) -> list[str]:
        """Agents newly known offline (their records stored by every output)."""
        flagged: list[str] = []
        for agent in self.store.agents():
            if agent.offline_since is not None:  # already reported for this silence
                self.pending.pop(agent.agent_id, None)
                continue
            waiting = self.pending.get(agent.agent_id)
            if waiting is None:
                if agent_status(agent, offline_after=self.offline_after, now=now) != "offline":
                    continue
                waiting = (self.publisher.delivery(self._records(agent, now)), now)
            delivery, since = waiting
            if not self.publisher.attempt(delivery):
                self.pending[agent.agent_id] = waiting   # tried again next round
                continue
            self.pending.pop(agent.agent_id, None)
            assert agent.last_seen is not None
            if agent_status(agent, offline_after=self.offline_after, now=now) != "offline":
                continue   # back meanwhile: the silence is on record, the agent is not off
            self.store.set_offline(agent.agent_id, since)
            log.warning("agent offline", agent_id=agent.agent_id, hostname=agent.hostname,
                        silent_seconds=round(since - agent.last_seen),
                        alerts=len(delivery.records) - 1)
            flagged.append(agent.agent_id)
        return flagged

    def _records(self, agent: AgentRecord, now: float) -> list[Record]:
        event = offline_event(agent, now)
        alerts = self.detect(event) if self.detect else [builtin_alert(event)]
        records = [Record(Kind.EVENT, event["event"]["id"], event, agent_id=agent.agent_id)]
        return records + [Record(Kind.ALERT, str(a["event"]["id"]), a) for a in alerts]

    def write_health(self) -> None:
        data = {"time": _iso(time.time()), **self.health()}
        tmp = self.health_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=2, default=str) + "\n")
        os.replace(tmp, self.health_path)
