"""Event time the correlation state can trust.

``@timestamp`` is whatever the agent says; ``event.ingested`` is the collector's clock
(pipeline.enrich sets it, overwriting the agent's). The time an event counts at in
correlation state is its ``@timestamp`` clamped to ``[ingested - behind, ingested +
ahead]`` (defaults: 5 minutes ahead, an NTP-synchronised host is never that far off; 7
days behind, an agent's spool may hold a long outage's events, and those are late, not
wrong). An event outside that range is flagged: ``sisguard.time_skew`` holds its offset
in seconds (``@timestamp`` minus ``event.ingested``: positive is ahead), and the engine
raises the alert ``TIME_SKEW_RULE`` for it, at most once per agent per
``alert_interval`` seconds of collector time (a whole backlog does not raise thousands),
dated ``event.ingested`` (an alert dated 2099 would be in nobody's time range).
The collector owns ``sisguard.time_skew``: a value the agent sent is removed.

Events without ``event.ingested`` (rule test cases, ``sisguard-rules match``) keep their
``@timestamp`` as it is and are never flagged. A timestamp without a zone is UTC.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from collector.detection.alerts import build_alert, event_id_of
from collector.detection.rules import RuleMeta

DEFAULT_AHEAD = 300.0
DEFAULT_BEHIND = 7 * 86400.0
DEFAULT_ALERT_INTERVAL = 3600.0
_MAX_AGENTS = 100_000  # agents whose last skew alert is remembered

TIME_SKEW_RULE = RuleMeta(
    id="5f1d3c2e-7a4b-4e59-9a35-0c7d8e2b6f10",
    title="Event time outside the trusted clock skew",
    description="An agent sent an event whose @timestamp is further from the collector's "
                "clock (event.ingested) than the configured skew allows: the host's clock "
                "is wrong, or the agent is trying to move correlation windows. Correlation "
                "used the clamped time; sisguard.time_skew holds the offset in seconds.",
    level="medium", tags=("attack.defense-evasion", "attack.t1070.006"), ruleset="sisguard")


def parse_time(value: Any) -> float | None:
    """Seconds since the epoch of an ISO-8601 text or epoch number (None: neither)."""
    if value.__class__ is str:
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            return None
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=UTC)
        try:
            return parsed.timestamp()
        except (OverflowError, OSError, ValueError):
            return None
    if isinstance(value, int | float) and not isinstance(value, bool):
        number = float(value)
        return number if number == number and abs(number) < 1e12 else None
    return None


def event_time(event: Mapping[str, Any]) -> float:
    """Seconds since the epoch of the event's @timestamp (now when it has none)."""
    ts = parse_time(event.get("@timestamp"))
    return time.time() if ts is None else ts


def _utc_seconds(text: Any) -> str | None:
    """``YYYY-MM-DDTHH:MM:SS`` of a UTC ISO text (None: another zone or form)."""
    if (text.__class__ is str and len(text) >= 20 and text[10] == "T"
            and (text[-1] == "Z" or text.endswith("+00:00"))):
        return str(text[:19])
    return None


class EventClock:
    def __init__(self, *, ahead: float = DEFAULT_AHEAD, behind: float = DEFAULT_BEHIND,
                 alert_interval: float = DEFAULT_ALERT_INTERVAL) -> None:
        if not (ahead >= 0 and behind >= 0):
            raise ValueError(f"clock skew bounds must be >= 0 (ahead {ahead}, behind {behind})")
        self.ahead = ahead
        self.behind = behind
        self.alert_interval = alert_interval
        # Earlier the same day (to the second) is within the bounds: no parsing needed.
        self._fast = behind >= 86400.0 and ahead >= 1.0
        self._lock = threading.Lock()
        self._ingested: tuple[str, float | None] = ("", None)  # one batch: one ingested
        self._alerted: OrderedDict[str, float] = OrderedDict()  # agent -> ingested time
        self.skewed = 0
        self.alerts = 0

    def _ingested_time(self, text: Any) -> float | None:
        cached = self._ingested
        if cached[0] == text:
            return cached[1]
        value = parse_time(text)
        if text.__class__ is str:
            self._ingested = (text, value)
        return value

    def judge(self, event: Mapping[str, Any]) -> tuple[float | None, dict[str, Any] | None]:
        """(the event's time for correlation state, None: ``state_time`` later; the skew
        alert to raise, if any). Flags or unflags the event (when it is a dict)."""
        meta = event.get("event")
        ingested = meta.get("ingested") if meta.__class__ is dict else None
        if ingested is None:
            return None, None
        ours = event.get("sisguard")
        if ours.__class__ is dict and "time_skew" in ours:
            del ours["time_skew"]  # the collector's field, not the agent's
        stamp = event.get("@timestamp")
        seconds = _utc_seconds(stamp)
        if seconds is not None and self._fast and seconds[:10] == str(ingested)[:10] \
                and seconds <= str(ingested)[:19]:
            return None, None  # the usual case: earlier the same day, within both bounds
        now = self._ingested_time(ingested)
        ts = parse_time(stamp)
        if now is None:
            return (time.time() if ts is None else ts), None
        if ts is None:
            return now, None
        offset = ts - now
        if -self.behind <= offset <= self.ahead:
            return ts, None
        if isinstance(event, dict):
            if ours.__class__ is not dict:  # absent, or not an object (malformed anyway)
                ours = event["sisguard"] = {}
            ours["time_skew"] = round(offset, 3)
        clamped = now + self.ahead if offset > 0 else now - self.behind
        return clamped, self._alert(event, now, ingested)

    def state_time(self, event: Mapping[str, Any]) -> float:
        """The event's time for state, when ``judge`` said it is within the bounds."""
        return event_time(event)

    def _alert(self, event: Mapping[str, Any], now: float, ingested: Any
               ) -> dict[str, Any] | None:
        agent = event.get("agent")
        name = str(agent.get("id")) if agent.__class__ is dict else ""
        with self._lock:
            self.skewed += 1
            last = self._alerted.get(name)
            if last is not None and 0 <= now - last < self.alert_interval:
                return None
            self._alerted[name] = now
            self._alerted.move_to_end(name)
            while len(self._alerted) > _MAX_AGENTS:
                self._alerted.popitem(last=False)
            self.alerts += 1
        alert = build_alert(TIME_SKEW_RULE, event, (event_id_of(event),))
        alert["@timestamp"] = ingested  # when it happened is what cannot be trusted
        return alert

    def stats(self) -> dict[str, int]:
        return {"time_skewed_events": self.skewed, "time_skew_alerts": self.alerts}
