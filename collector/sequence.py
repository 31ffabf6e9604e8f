"""Sequence numbers checked: an agent cannot erase its own later data, nor skip dedupe.

Each agent's events carry a strictly increasing sequence number (the agent's spool gives
them; SQLite's AUTOINCREMENT never goes above 2^63-1). The collector keeps, per agent,
its *mark*: the highest sequence number it has taken (stored or dead-lettered), and an
allowance of numbers it may skip. A sequence number in a batch is refused when it is

* ``0`` or above 2^63-1: no agent makes these (0 once skipped dedupe and detection; a
  mark at 2^64-1 once made every later event of the agent a "duplicate");
* a *leap*: one that skips more numbers than the agent's allowance. An honest agent
  skips numbers only when its spool dropped its oldest events (and says so), at most
  what it made meanwhile: the allowance starts at ``max_gap`` (a full spool of tiny
  events), grows by ``max_rate`` per second, and every number skipped is spent from
  it. So an honest agent back from a long outage is inside it, while a rogue one can
  climb at most ``max_rate`` numbers a second beyond what it sends: from 1 to 2^63
  takes millions of years (a bound per batch would let it leap ``max_gap`` each batch);
* *backwards*: at or below ``mark - resend``, where ``resend`` is what a reconnecting
  agent legitimately sends again (its window of unacked batches). Those would be taken
  for duplicates of what is stored and deleted from the agent's spool.

A refused event is dead-lettered with its document and reason and acked as rejected
(``Ack.rejected``), so the spool moves on, nothing is resent forever, and nothing is lost.
A collector without a mark for the agent takes the agent's first number as the mark,
but never below the highest number already stored (the archive's, else
Elasticsearch's: ``collector/ingest.py``): below it, minus a resend, is backwards.
Each agent with refused numbers raises one ``sisguard.sequence_anomaly`` alert per
``anomaly_window``, not one per event.

The marks (number, allowance, when) live in memory and in ``DATA_DIR/sequence.json``,
rewritten atomically at most every few seconds and at shutdown: a mark that lags after a
crash only widens what is accepted for a moment, never refuses an honest agent.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from collector.pipeline import AgentIdentity
from common.logs import get_logger

log = get_logger("sisguard.collector.sequence")

MAX_SEQ = 2**63 - 1
SAVE_EVERY = 5.0  # seconds


@dataclass(frozen=True)
class SequencePolicy:
    max_gap: int = 10_000_000        # > a full 512 MiB spool of 54-byte events
    max_rate: float = 50_000.0       # events per second an agent may have made meanwhile
    resend: int = 4 * 1000           # window x batch size: what a reconnect sends again
    anomaly_window: float = 600.0    # seconds: one alert per agent per window


@dataclass
class _Mark:
    seq: int
    credit: int                      # numbers the agent may still skip, as of ``stamp``
    stamp: float                     # time.time()
    rebase: bool = False             # taken from what is stored: the next number forward
                                     # sets it, as on first sight (in memory only)

    def credit_at(self, now: float, policy: SequencePolicy) -> int:
        earned = int(policy.max_rate * max(0.0, now - self.stamp))
        return min(MAX_SEQ, self.credit + earned)


@dataclass
class BatchCheck:
    """The sequence numbers of one batch, checked in order against the agent's mark."""

    agent_id: str
    policy: SequencePolicy
    mark: _Mark | None
    now: float
    credit: int = 0                              # what this batch may still skip
    rebase: bool = False                         # the mark is what is stored elsewhere
    top: int = 0                                 # highest number taken so far
    refused: list[tuple[int, str]] = field(default_factory=list)   # (seq, kind)

    def __post_init__(self) -> None:
        if self.mark is not None:
            self.top = self.mark.seq
            self.credit = self.mark.credit_at(self.now, self.policy)

    def is_resend(self, seq: int) -> bool:
        """At or below the mark: already taken once (detection is not run again)."""
        return self.mark is not None and seq <= self.mark.seq

    def refusal(self, seq: int) -> str | None:
        """None when ``seq`` is taken; else the reason it is refused (said in the Ack)."""
        kind, reason = self._verdict(seq)
        if kind:
            self.refused.append((seq, kind))
            return reason
        if not self.top or (self.rebase and seq > self.top):
            # first sight of this agent here: its first number forward is the mark
            self.credit, self.rebase = self.policy.max_gap, False
        elif seq > self.top + 1:
            self.credit -= seq - self.top - 1
        self.top = max(self.top, seq)
        return None

    def _verdict(self, seq: int) -> tuple[str, str]:
        if seq == 0:
            return "zero", "sequence number 0 is never given by an agent"
        if seq > MAX_SEQ:
            return "out_of_range", f"sequence number {seq} is above 2^63-1"
        if not self.top:
            return "", ""
        skipped = seq - self.top - 1
        if skipped > self.credit and not self.rebase:
            return "leap", (f"sequence number {seq} leaps: it skips {skipped} numbers after "
                            f"{self.top}, more than this agent can have made and dropped "
                            f"(allowance {self.credit})")
        if self.mark is not None and seq <= self.mark.seq - self.policy.resend:
            return "backwards", (f"sequence number {seq} goes backwards: {self.mark.seq} "
                                 f"was taken, a resend starts above "
                                 f"{self.mark.seq - self.policy.resend}")
        return "", ""


class SequenceMarks:
    def __init__(self, path: Path | None, policy: SequencePolicy, *,
                 clock: Callable[[], float] = time.time) -> None:
        self.path = path
        self.policy = policy
        self.clock = clock
        self._lock = threading.Lock()
        self._marks: dict[str, _Mark] = {}
        self._alerted: dict[str, float] = {}    # agent id -> when its last alert was raised
        self._saved = 0.0
        self._dirty = False
        self.refused: dict[str, int] = {}       # kind -> events refused
        self.alerts = 0
        self._load()

    def begin(self, agent_id: str, *, floor: int = 0) -> BatchCheck:
        """Start checking a batch; ``floor`` is the highest number an output has stored
        (the archive's high-water mark, Elasticsearch's for an agent without a mark)."""
        now = self.clock()
        with self._lock:
            mark = self._marks.get(agent_id)
            if mark is None and 0 < floor <= MAX_SEQ:
                # never below what is stored; forward of it, as on first sight
                mark = _Mark(floor, self.policy.max_gap, now, rebase=True)
            elif mark is not None and mark.seq < floor <= MAX_SEQ:
                # marks saved a moment before a crash lag what the archive has stored
                mark = self._marks[agent_id] = _Mark(floor, mark.credit, mark.stamp)
            snapshot = _Mark(mark.seq, mark.credit, mark.stamp) if mark else None
        return BatchCheck(agent_id, self.policy, snapshot, now,
                          rebase=mark is not None and mark.rebase)

    def anomaly_alert(self, agent: AgentIdentity, check: BatchCheck) -> dict[str, Any] | None:
        """The alert for this batch's refusals, unless this agent had one this window."""
        if not check.refused:
            return None
        with self._lock:
            last = self._alerted.get(agent.agent_id)
        if last is not None and check.now - last < self.policy.anomaly_window:
            return None
        return anomaly_alert(agent, check)

    def commit(self, check: BatchCheck, *, alerted: bool) -> None:
        """The batch is stored: move the mark, count, and save now and then."""
        with self._lock:
            for _, kind in check.refused:
                self.refused[kind] = self.refused.get(kind, 0) + 1
            if alerted:
                self._alerted[check.agent_id] = check.now
                self.alerts += 1
            if check.top:
                mark = self._marks.get(check.agent_id)
                self._marks[check.agent_id] = _Mark(max(check.top, mark.seq if mark else 0),
                                                    check.credit, check.now,
                                                    rebase=check.rebase)
                self._dirty = self._dirty or mark is None or check.top > mark.seq
            if self._dirty and self.clock() - self._saved >= SAVE_EVERY:
                self._save()
        if check.refused:
            log.warning("sequence numbers refused", agent_id=check.agent_id,
                        refused=len(check.refused), first=check.refused[0][0],
                        kinds=sorted({k for _, k in check.refused}),
                        mark=check.mark.seq if check.mark else None)

    def mark(self, agent_id: str) -> int | None:
        with self._lock:
            mark = self._marks.get(agent_id)
        return mark.seq if mark else None

    def close(self) -> None:
        with self._lock:
            if self._dirty:
                self._save()

    def health(self) -> dict[str, Any]:
        with self._lock:
            return {"agents": len(self._marks), "refused": dict(self.refused),
                    "alerts": self.alerts}

    def _load(self) -> None:
        if self.path is None or not self.path.exists():
            return
        try:
            state = json.loads(self.path.read_text())
            marks = {str(k): _Mark(int(v[0]), int(v[1]), float(v[2]))
                     for k, v in state["marks"].items()}
        except (OSError, ValueError, KeyError, TypeError, IndexError) as e:
            # not fatal: every agent is then first seen again (the archive still knows)
            log.error("sequence marks unreadable; starting afresh", path=str(self.path),
                      error=f"{type(e).__name__}: {e}")
            return
        self._marks = {k: m for k, m in marks.items() if 0 < m.seq <= MAX_SEQ and m.credit >= 0}

    def _save(self) -> None:
        self._saved = self.clock()
        self._dirty = False
        if self.path is None:
            return
        tmp = self.path.with_name(self.path.name + ".tmp")
        try:
            with open(tmp, "w") as out:
                json.dump({"marks": {k: [m.seq, m.credit, m.stamp]
                                     for k, m in self._marks.items()}}, out)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, self.path)
        except OSError as e:
            self._dirty = True
            log.error("sequence marks not saved; will retry", path=str(self.path),
                      error=str(e))


def anomaly_alert(agent: AgentIdentity, check: BatchCheck) -> dict[str, Any]:
    now = dt.datetime.fromtimestamp(check.now, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    kinds = sorted({k for _, k in check.refused})
    first = check.refused[0][0]
    alert_id = hashlib.sha256(f"builtin-sequence-anomaly\n{agent.agent_id}\n{first}\n"
                              f"{check.now}".encode()).hexdigest()
    mark = check.mark.seq if check.mark else None
    return {
        "@timestamp": now,
        "message": (f"agent {agent.hostname} sent sequence numbers it cannot have made "
                    f"({', '.join(kinds)}; first {first}, mark {mark}): refused and "
                    f"dead-lettered"),
        "event": {"kind": "alert", "category": ["host"], "type": ["info"],
                  "action": "sequence_anomaly", "module": "sisguard",
                  "dataset": "sisguard.alert", "severity": 73, "id": alert_id,
                  "ingested": now, "reason": ", ".join(kinds)},
        "rule": {"id": "builtin-sequence-anomaly", "name": "Sisguard Sequence Anomaly",
                 "ruleset": "sisguard-builtin"},
        "agent": {"id": agent.agent_id, "name": agent.hostname, "type": "sisguard",
                  "version": agent.version},
        "host": {"name": agent.hostname},
        "organization": {"id": agent.organization_id, "name": agent.organization},
        "sisguard": {
            "alert": {"level": "high", "count": len(check.refused),
                      "event_ids": [f"{agent.agent_id}-{s}" for s, _ in check.refused[:20]]},
            "sequence_anomaly": {"kinds": kinds, "first": str(first),
                                 "mark": None if mark is None else str(mark),
                                 "refused": len(check.refused)},
        },
    }
