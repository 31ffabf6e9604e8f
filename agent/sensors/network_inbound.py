"""Accepted TCP connections (``connection_accepted``) and their rate limit.

A connection is inbound when it is TCP ``ESTABLISHED`` and its local address and port
are those of a TCP listener (or the listener is bound to the wildcard address). It is
reported once, keyed by its socket inode: the set of inodes seen at the last poll is
all that is kept (bounded by the number of sockets a poll reads). A connection still in
the listener's accept queue has inode 0 and waits for the next poll; one that opened
and closed between two polls is not seen at all (docs/events.md says so).

A remote client can open thousands of connections: ``RateLimit`` lets through at most
``burst`` events per (source address, local port) per ``window`` seconds and counts the
rest, handed to the next event of the same key as ``sisguard.network.suppressed``. The
table of keys is an LRU of ``max_keys`` entries; counts of evicted keys are totalled in
``evicted_suppressed`` (the sensor puts it in its health details), never lost silently.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from agent.platform.linux.sock_diag import TCP_ESTABLISHED, TCP_LISTEN, Socket

WILDCARDS = ("0.0.0.0", "::")


def is_loopback(ip: str) -> bool:
    """127.0.0.0/8 or ::1, for an address in Python's normal text form (``str`` of an
    ``ipaddress`` address: what both socket readers give, IPv4-mapped ones as IPv4).
    Called for every connection of every poll: a prefix test, no parse."""
    return ip.startswith(("127.", "::ffff:127.")) or ip == "::1"


@dataclass
class _Bucket:
    start: float
    count: int = 0
    suppressed: int = 0


class RateLimit:
    """At most ``burst`` passes per key in each ``window`` seconds (a fixed window that
    opens at the key's first pass); what is refused is counted for the next pass."""

    def __init__(self, *, burst: int, window: float, max_keys: int = 4096,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if burst < 1 or window <= 0 or max_keys < 1:
            raise ValueError("rate limit: burst and max_keys must be >= 1, window > 0")
        self.burst, self.window, self.max_keys = burst, window, max_keys
        self._clock = clock
        self._buckets: OrderedDict[tuple[str, int], _Bucket] = OrderedDict()
        self.suppressed_total = 0
        self.evicted_suppressed = 0   # counted, then their key was forgotten

    def allow(self, key: tuple[str, int]) -> tuple[bool, int]:
        """(True, n suppressed since the last pass) or (False, 0) when over the limit."""
        now = self._clock()
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = _Bucket(now)
            while len(self._buckets) > self.max_keys:
                _, old = self._buckets.popitem(last=False)
                self.evicted_suppressed += old.suppressed
        else:
            self._buckets.move_to_end(key)
            if now - bucket.start >= self.window:
                bucket.start, bucket.count = now, 0
        if bucket.count < self.burst:
            bucket.count += 1
            suppressed, bucket.suppressed = bucket.suppressed, 0
            return True, suppressed
        bucket.suppressed += 1
        self.suppressed_total += 1
        return False, 0


class InboundTracker:
    """Finds the connections accepted since the last poll."""

    def __init__(self, *, include_loopback: bool = False) -> None:
        self.include_loopback = include_loopback
        self._known: set[int] = set()
        self._current: set[int] = set()

    def commit(self) -> None:
        """The connections ``new`` returned were reported: the next poll compares with
        them (a poll that failed before this reports them again)."""
        self._known = self._current

    def new(self, sockets: Iterable[Socket]) -> list[tuple[Socket, Socket]]:
        """(connection, its listener) for each accepted connection not seen before
        (before the last ``commit``)."""
        sockets = list(sockets)
        listeners = {(s.local_ip, s.local_port): s for s in sockets
                     if s.transport == "tcp" and s.state == TCP_LISTEN}
        current: set[int] = set()
        found: list[tuple[Socket, Socket]] = []
        for s in sockets:
            if s.transport != "tcp" or s.state != TCP_ESTABLISHED or not s.inode:
                continue
            listener = listeners.get((s.local_ip, s.local_port))
            for wildcard in WILDCARDS:
                if listener is not None:
                    break
                listener = listeners.get((wildcard, s.local_port))
            if listener is None:
                continue
            if not self.include_loopback and is_loopback(s.remote_ip):
                continue
            current.add(s.inode)
            if s.inode not in self._known:
                found.append((s, listener))
        self._current = current
        return found
