"""Admission: the budgets that keep one client from starving the others.

Enrollment (unauthenticated, anyone who can reach the port): a call is admitted only
while its source address holds fewer than ``per_address_concurrent`` calls and has
attempts left in its rate bucket; a call that has not sent its request within the
deadline is cancelled by one watchdog thread. Refused attempts are counted and logged
once per address per window, never once per attempt (a flood must not flood the log).

Events (enrolled agents, mutual TLS): at most ``max_streams_per_agent`` open streams per
agent id, and one token bucket per agent shared by all its streams, so opening more
streams buys no more throughput.

Every table here is bounded: addresses beyond ``max_addresses`` share one overflow entry.
"""

from __future__ import annotations

import ipaddress
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import grpc

from common.logs import get_logger

log = get_logger("sisguard.collector.admission")

Clock = Callable[[], float]
OVERFLOW = "<overflow>"   # the shared key once the address table is full


class TokenBucket:
    """``rate`` tokens a second, at most ``burst`` saved up. Not thread-safe by itself."""

    def __init__(self, rate: float, burst: float, *, clock: Clock = time.monotonic) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = burst
        self._clock = clock
        self.stamp = clock()

    def _refill(self) -> None:
        now = self._clock()
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now

    def try_take(self, n: float = 1.0) -> bool:
        """Take n tokens if there are that many; never waits."""
        self._refill()
        if self.tokens >= n:
            self.tokens -= n
            return True
        return False

    def reserve(self, n: float) -> float:
        """Take n tokens, going into debt if need be: the seconds to wait before using them.

        Callers that reserve one after another queue up behind each other's debt, so the
        bucket's rate holds across all of them (several streams of one agent)."""
        self._refill()
        self.tokens -= n
        return 0.0 if self.tokens >= 0 else -self.tokens / self.rate

    @property
    def full(self) -> bool:
        self._refill()
        return self.tokens >= self.burst


def address_of(peer: str) -> str:
    """The source a limit applies to, from a gRPC peer string.

    'ipv4:10.0.0.7:51000' -> '10.0.0.7'; an IPv6 address counts by its /64 (one host
    usually owns a whole /64); anything else (unix sockets) is its own kind."""
    kind, _, rest = peer.partition(":")
    if kind == "ipv4":
        return rest.rpartition(":")[0] or rest
    if kind == "ipv6":
        host = rest.rpartition(":")[0].strip("[]") if rest.startswith("[") else rest
        host = host.split("%", 1)[0]
        try:
            ip = ipaddress.IPv6Address(host)
        except ValueError:
            return host[:64]
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        if ip.is_loopback:
            return str(ip)
        return str(ipaddress.IPv6Network(f"{ip}/64", strict=False))
    return kind[:16] or "unknown"


class RefusalLog:
    """Counts refusals; logs one line per (address) per window, carrying the count of the
    window before. Bounded: at most ``max_keys`` addresses are tracked."""

    def __init__(self, what: str, *, window: float, max_keys: int = 4096,
                 clock: Clock = time.monotonic) -> None:
        self.what = what
        self.window = window
        self.max_keys = max_keys
        self._clock = clock
        self._lock = threading.Lock()
        self._windows: dict[str, tuple[float, int]] = {}   # key -> (window start, count)
        self.total: dict[str, int] = {}                     # reason -> refusals ever
        self.logged = 0

    def refused(self, address: str, reason: str, **fields: object) -> None:
        now = self._clock()
        with self._lock:
            self.total[reason] = self.total.get(reason, 0) + 1
            if address not in self._windows and len(self._windows) >= self.max_keys:
                self._forget_over(now)
            key = (address if address in self._windows or len(self._windows) < self.max_keys
                   else OVERFLOW)
            start, count = self._windows.get(key, (None, 0))
            if start is not None and now - start < self.window:
                self._windows[key] = (start, count + 1)
                return
            self._windows[key] = (now, 1)
            self.logged += 1
        log.warning(f"{self.what} refused", address=key, reason=reason,
                    refused_in_previous_window=count, window_seconds=self.window,
                    note="further refusals from this address are counted, "
                         "and logged once per window", **fields)

    def _forget_over(self, now: float) -> None:
        for key in [k for k, (start, _) in self._windows.items() if now - start >= self.window]:
            del self._windows[key]

    def counts(self) -> dict[str, int]:
        with self._lock:
            return dict(self.total)


@dataclass
class _Source:
    bucket: TokenBucket
    active: int = 0


@dataclass
class EnrollLease:
    """One admitted Enroll call: ``release()`` when it ends (idempotent)."""

    gate: EnrollGate
    key: str
    released: bool = False

    def release(self) -> None:
        self.gate._release(self)


class EnrollGate:
    """Per-address admission for the enrollment port."""

    def __init__(self, *, per_address_concurrent: int, per_minute: float, burst: int,
                 log_window: float, max_addresses: int = 4096,
                 clock: Clock = time.monotonic) -> None:
        self.per_address_concurrent = per_address_concurrent
        self.per_minute = per_minute
        self.burst = burst
        self.max_addresses = max_addresses
        self._clock = clock
        self._lock = threading.Lock()
        self._sources: dict[str, _Source] = {}
        self.refusals = RefusalLog("enrollment attempts", window=log_window,
                                   max_keys=max_addresses, clock=clock)
        self.admitted = 0

    def admit(self, peer: str) -> EnrollLease | str:
        """A lease, or the reason the call is refused (already counted and logged)."""
        address = address_of(peer)
        with self._lock:
            key = self._key(address)
            source = self._sources.get(key)
            if source is None:
                source = self._sources[key] = _Source(TokenBucket(
                    self.per_minute / 60.0, self.burst, clock=self._clock))
            if source.active >= self.per_address_concurrent:
                reason = (f"too many enrollment calls in progress from {key} "
                          f"(at most {self.per_address_concurrent})")
            elif not source.bucket.try_take():
                reason = (f"too many enrollment attempts from {key} "
                          f"(at most {self.per_minute:g} a minute)")
            else:
                source.active += 1
                self.admitted += 1
                return EnrollLease(self, key)
        self.refusals.refused(address, reason.split(" from ", 1)[0])
        return reason

    def _key(self, address: str) -> str:
        if address in self._sources or len(self._sources) < self.max_addresses:
            return address
        for key in [k for k, s in self._sources.items() if s.active == 0 and s.bucket.full]:
            del self._sources[key]   # forgotten sources are back where they started: no gain
        return address if len(self._sources) < self.max_addresses else OVERFLOW

    def _release(self, lease: EnrollLease) -> None:
        with self._lock:
            if lease.released:
                return
            lease.released = True
            source = self._sources.get(lease.key)
            if source is not None:
                source.active -= 1

    def in_progress(self) -> int:
        """Admitted calls not yet ended, all sources together."""
        with self._lock:
            return sum(s.active for s in self._sources.values())

    def note_refused(self, peer: str, reason: str) -> None:
        """A refusal decided later (bad token, bad CSR): counted and logged per window."""
        self.refusals.refused(address_of(peer), reason)


@dataclass
class DeadlineWatch:
    """One thread that cancels calls whose deadline passed (not one timer per call)."""

    _cond: threading.Condition = field(default_factory=threading.Condition)
    _calls: dict[int, tuple[float, Callable[[], None]]] = field(default_factory=dict)
    _next_id: int = 0
    _thread: threading.Thread | None = None
    _stopped: bool = False
    cancelled: int = 0

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="enroll-deadline", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def arm(self, seconds: float, cancel: Callable[[], None]) -> int:
        with self._cond:
            self._next_id += 1
            self._calls[self._next_id] = (time.monotonic() + seconds, cancel)
            self._cond.notify_all()
            return self._next_id

    def disarm(self, ticket: int) -> None:
        with self._cond:
            self._calls.pop(ticket, None)

    def _run(self) -> None:
        while True:
            with self._cond:
                if self._stopped:
                    return
                now = time.monotonic()
                due = [t for t, (when, _) in self._calls.items() if when <= now]
                expired = [self._calls.pop(t)[1] for t in due]
                if not expired:
                    soonest = min((when for when, _ in self._calls.values()), default=now + 1)
                    self._cond.wait(max(0.01, min(1.0, soonest - now)))
                    continue
            for cancel in expired:
                self.cancelled += 1
                try:
                    cancel()
                except Exception:  # a call that ended meanwhile: nothing to cancel
                    log.exception("cancelling an enrollment call failed")


class StreamGate:
    """Events port: streams per agent, and one token bucket per agent across its streams."""

    def __init__(self, *, max_streams_per_agent: int, events_per_second: float,
                 stopping: threading.Event, clock: Clock = time.monotonic) -> None:
        self.max_streams_per_agent = max_streams_per_agent
        self.events_per_second = events_per_second
        self.stopping = stopping
        self._clock = clock
        self._lock = threading.Lock()
        self._streams: dict[str, int] = {}
        self._buckets: dict[str, TokenBucket] = {}
        self.refused_streams = 0
        self.throttled_seconds = 0.0

    def open(self, agent_id: str) -> Callable[[], None] | None:
        """A release function for the new stream, or None when the agent has its fill."""
        with self._lock:
            open_now = self._streams.get(agent_id, 0)
            if open_now >= self.max_streams_per_agent:
                self.refused_streams += 1
                return None
            self._streams[agent_id] = open_now + 1
        released = threading.Event()

        def release() -> None:
            with self._lock:
                if released.is_set():
                    return
                released.set()
                left = self._streams.get(agent_id, 1) - 1
                if left > 0:
                    self._streams[agent_id] = left
                else:
                    self._streams.pop(agent_id, None)
        return release

    def admit(self, agent_id: str, context: grpc.ServicerContext) -> Callable[[], None]:
        """``open`` for a Stream call: refused with RESOURCE_EXHAUSTED (and logged) when
        the agent has its fill; the place is given back when the call ends, however."""
        release = self.open(agent_id)
        if release is None:
            log.warning("stream refused: the agent has its fill", agent_id=agent_id,
                        limit=self.max_streams_per_agent)
            context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED,
                          f"agent {agent_id} already has {self.max_streams_per_agent} open "
                          "streams (limits.max_streams_per_agent)")
            raise AssertionError("abort returned")  # pragma: no cover
        context.add_callback(release)
        return release

    def streams(self, agent_id: str) -> int:
        with self._lock:
            return self._streams.get(agent_id, 0)

    def throttle(self, agent_id: str, events: int,
                 is_active: Callable[[], bool] = lambda: True) -> bool:
        """Wait until this agent's bucket lets ``events`` pass; False if the stream ended
        or the collector is stopping meanwhile. Excess is slowed down, never dropped."""
        with self._lock:
            bucket = self._buckets.get(agent_id)
            if bucket is None:
                rate = self.events_per_second
                bucket = self._buckets[agent_id] = TokenBucket(rate, rate, clock=self._clock)
            wait = bucket.reserve(events)
            self.throttled_seconds += wait
        deadline = self._clock() + wait
        while wait > 0:
            if self.stopping.wait(min(wait, 1.0)) or not is_active():
                return False
            wait = deadline - self._clock()
        return True
