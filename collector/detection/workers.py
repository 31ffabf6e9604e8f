"""Detection in worker processes: one engine per process, each event routed by its agent.

``WorkerPool`` stands where a ``DetectionEngine`` stands (the pipeline's ``Detector``):
``process_many(events)`` sends each event to the worker ``crc32(agent.id) % N`` and
returns the alerts in the events' order; the calling ingest thread waits only for its
own batch, other streams' batches run on the other workers meanwhile.

Why partitioning by ``agent.id`` is exact. Every correlation's group key starts with
``agent.id`` (the linker puts it first: correlation_rules.py) and its time partition is
that agent's (correlation.py), the clock's skew alert is rate-limited per agent
(clock.py), and one agent's batches come in order (the ingest holds a lock per agent
while a batch goes through): so each worker sees every event any of its groups can
hold, in the order one process would. ``agent.id`` is the collector's (pipeline.enrich,
from the client certificate), never the payload's. A correlation whose key does not
start with ``agent.id`` (none can be linked today) would group across agents: then every
event goes to worker 0, logged once. What is not the same as one process: the bounds
(``max_state_bytes``, the groups per correlation) are shared out, each worker keeps
1/N of them, so eviction, when a bound is reached, happens per worker.

A worker is ``python -m collector.detection.worker_main FD``: a child process speaking
pickled frames over a socket pair. It loads the rules itself (compiled rules do not
pickle); on a reload the pool sends the rule set it wants, as (id, fingerprint) pairs,
and the worker builds it from its files and its previous rules (a file broken at reload
keeps its previous version, as in the watcher), reporting what it could not find.
A worker that dies (or does not answer a request within ``timeout``) is killed and
started again and every request it had is sent again in order; the one it was working
on is given up after ``MAX_ATTEMPTS`` (its events get no alerts, counted as errors).
The new worker starts with empty correlation state: the groups of that worker's agents
start afresh (a brute force under way is counted again from the restart).
"""

from __future__ import annotations

import contextlib
import os
import pickle
import socket
import subprocess
import sys
import threading
import time
import zlib
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from collector.config import CollectorConfig
from collector.detection.rules import IDENTITY_PATH, LoadResult
from collector.detection.worker_main import (
    Wanted,
    WorkerSettings,
    apply_skew,
    merge_stats,
)
from common.logs import get_logger

log = get_logger("sisguard.collector.detection.workers")

MAX_ATTEMPTS = 2          # a request whose worker died this often is given up
START_TIMEOUT = 120.0     # for a worker to load its rules
_PROTOCOL = pickle.HIGHEST_PROTOCOL

Alerts = list[dict[str, Any]]


class WorkerFailed(RuntimeError):
    """A detection request that no worker could complete."""


def default_workers() -> int:
    """The cores this process may use, minus one for ingest; at least 1."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    return max(1, cores - 1)


def pool_for(config: CollectorConfig, result: LoadResult) -> WorkerPool | None:
    """The pool ``detection.workers`` asks for (None: 1, detection on the ingest threads)."""
    bounds = config.detection
    count = bounds.workers if bounds.workers is not None else default_workers()
    if count <= 1:
        return None
    return WorkerPool(WorkerSettings(
        paths=tuple(str(p) for p in config.rules.paths),
        filters=tuple(str(p) for p in config.rules.filters), workers=count,
        max_state_bytes=int(bounds.max_state_bytes),
        max_pattern_text=int(bounds.max_pattern_text), clock_ahead=float(bounds.clock_ahead),
        clock_behind=float(bounds.clock_behind), log_level=config.log_level), result)


def wanted_rules(result: LoadResult) -> Wanted:
    return [(r.meta.id, r.fingerprint) for r in result.rules]


def by_sender(result: LoadResult) -> bool:
    """Every correlation groups within one agent: events may be routed by agent."""
    return all(paths[:1] == (IDENTITY_PATH,)
               for corr in result.correlations for paths in corr.group_paths.values())


def route_key(event: Mapping[str, Any]) -> bytes:
    agent = event.get("agent")
    ident = agent.get("id") if agent.__class__ is dict else None
    return str(ident).encode("utf-8", "surrogatepass") if ident is not None else b""


@dataclass
class _Request:
    future: Future[Any]
    data: bytes
    sent: float = 0.0
    attempts: int = 0


@dataclass
class _Worker:
    index: int
    proc: subprocess.Popen[bytes] | None = None
    conn: Connection | None = None
    pending: OrderedDict[int, _Request] = field(default_factory=OrderedDict)
    lock: threading.Lock = field(default_factory=threading.Lock)       # pending, conn
    send_lock: threading.Lock = field(default_factory=threading.Lock)  # frame order
    reader: threading.Thread | None = None
    restarts: int = 0
    given_up: int = 0


class WorkerPool:
    """N detection processes behind the ``Detector`` protocol (see the module text)."""

    def __init__(self, settings: WorkerSettings, result: LoadResult) -> None:
        if settings.workers < 1:
            raise ValueError(f"detection.workers must be at least 1, got {settings.workers}")
        self.settings = settings
        self._result = result
        self._wanted = wanted_rules(result)
        self._by_sender = self._check_routing(result)
        self._ids = iter(range(1, 1 << 62))
        self._ids_lock = threading.Lock()
        self._closing = threading.Event()
        self._workers = [_Worker(i) for i in range(settings.workers)]
        spawned = [self._spawn(w) for w in self._workers]   # they load rules at once
        for worker, (proc, conn) in zip(self._workers, spawned, strict=True):
            self._ready(worker, proc, conn)
            worker.reader = threading.Thread(target=self._read, args=(worker,), daemon=True,
                                             name=f"detect-worker-{worker.index}")
            worker.reader.start()

    # -- the Detector protocol -------------------------------------------------------

    @property
    def result(self) -> LoadResult:
        return self._result

    def process(self, event: dict[str, Any]) -> Alerts:
        """One event (the monitor's agent_offline): never raises, like the engine."""
        try:
            return self.process_many([event])[0]
        except WorkerFailed:
            log.exception("detection failed in a worker")
            return []

    def process_many(self, events: Sequence[dict[str, Any]]) -> list[Alerts]:
        """Alerts of each event, in order. Raises WorkerFailed when a worker gave up."""
        n = len(self._workers)
        parts: dict[int, list[int]] = {}
        for i, event in enumerate(events):
            w = zlib.crc32(route_key(event)) % n if self._by_sender else 0
            parts.setdefault(w, []).append(i)
        futures = [(idx, self._submit(self._workers[w], "detect",
                                      [events[i] for i in idx]))
                   for w, idx in parts.items()]
        out: list[Alerts] = [[] for _ in events]
        failed: BaseException | None = None
        for idx, future in futures:
            try:
                results = future.result()
            except Exception as e:
                failed = e
                continue
            for i, (alerts, skew) in zip(idx, results, strict=True):
                out[i] = alerts
                apply_skew(events[i], skew)
        if failed is not None:
            raise WorkerFailed(f"detection failed in a worker: {failed}") from failed
        return out

    def replace(self, result: LoadResult) -> None:
        """New rules to every worker; returns once each has them (or has said what it
        could not find: logged)."""
        self._result = result
        self._wanted = wanted_rules(result)
        self._by_sender = self._check_routing(result)
        futures = [self._submit(w, "rules", self._wanted) for w in self._workers]
        for worker, future in zip(self._workers, futures, strict=True):
            try:
                missing = future.result(timeout=START_TIMEOUT)
            except Exception as e:
                log.error("detection worker did not take the new rules", worker=worker.index,
                          error=str(e))
                continue
            if missing:
                log.error("detection worker lacks rules the collector loaded (a file "
                          "changed again during the reload: the next reload fixes it)",
                          worker=worker.index, missing=[m[0] for m in missing][:20])

    def stats(self) -> dict[str, Any]:
        """The engines' counters summed over the workers, and the pool's own."""
        futures = [self._submit(w, "stats", None) for w in self._workers]
        merged: dict[str, Any] = {"rules": {}, "correlations": {}}
        answered = 0
        for future in futures:
            try:
                one = future.result(timeout=5.0)
            except Exception:
                continue
            answered += 1
            merge_stats(merged, one)
        merged["rules_loaded"] = len(self._result.rules)
        merged["max_state_bytes"] = self.settings.max_state_bytes
        merged["workers"] = {
            "count": len(self._workers), "answered": answered,
            "by_agent": self._by_sender,
            "restarts": sum(w.restarts for w in self._workers),
            "given_up": sum(w.given_up for w in self._workers),
        }
        return merged

    def pids(self) -> list[int]:
        return [w.proc.pid if w.proc is not None else 0 for w in self._workers]

    def close(self) -> None:
        self._closing.set()
        for worker in self._workers:
            with worker.lock:
                conn, proc = worker.conn, worker.proc
                worker.conn = None
                pending = list(worker.pending.values())
                worker.pending.clear()
            for request in pending:
                request.future.set_exception(WorkerFailed("the detection pool is closed"))
            if conn is not None:
                conn.close()   # the worker reads EOF and exits
            if proc is not None:
                try:
                    proc.wait(timeout=5.0)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            if worker.reader is not None and worker.reader is not threading.current_thread():
                worker.reader.join(timeout=5.0)

    # -- internals -------------------------------------------------------------------

    @staticmethod
    def _check_routing(result: LoadResult) -> bool:
        ok = by_sender(result)
        if not ok:
            log.warning("a correlation groups across agents: every event goes to detection "
                        "worker 0 (no parallel detection)")
        return ok

    def _submit(self, worker: _Worker, op: str, payload: Any) -> Future[Any]:
        with self._ids_lock:
            req_id = next(self._ids)
        request = _Request(Future(), pickle.dumps((req_id, op, payload), protocol=_PROTOCOL))
        with worker.send_lock:
            with worker.lock:
                if self._closing.is_set():
                    request.future.set_exception(WorkerFailed("the detection pool is closed"))
                    return request.future
                worker.pending[req_id] = request
                conn = worker.conn
            if conn is not None:   # None: restarting; the restart sends it
                self._send(conn, request)
        return request.future

    @staticmethod
    def _send(conn: Connection, request: _Request) -> None:
        request.sent = time.monotonic()
        with contextlib.suppress(OSError):  # the worker died: its restart sends it again
            conn.send_bytes(request.data)

    def _start(self, worker: _Worker) -> None:
        """Start the worker's process and wait until it has loaded the rules."""
        self._ready(worker, *self._spawn(worker))

    def _spawn(self, worker: _Worker) -> tuple[subprocess.Popen[bytes], Connection]:
        ours, theirs = socket.socketpair()
        env = dict(os.environ)
        root = str(Path(__file__).resolve().parents[2])   # where collector/ and common/ are
        env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
        try:
            proc = subprocess.Popen(
                [sys.executable, "-m", "collector.detection.worker_main", str(theirs.fileno())],
                pass_fds=(theirs.fileno(),), env=env, stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL)
        finally:
            theirs.close()
        conn = Connection(ours.detach())
        conn.send_bytes(pickle.dumps((self.settings, worker.index, self._wanted),
                                     protocol=_PROTOCOL))
        return proc, conn

    def _ready(self, worker: _Worker, proc: subprocess.Popen[bytes], conn: Connection
               ) -> None:
        if not conn.poll(START_TIMEOUT):
            proc.kill()
            proc.wait()
            conn.close()
            raise WorkerFailed(f"detection worker {worker.index} did not start within "
                               f"{START_TIMEOUT:.0f} s")
        try:
            conn.recv_bytes()   # ready
        except (EOFError, OSError) as e:
            proc.wait()
            conn.close()
            raise WorkerFailed(f"detection worker {worker.index} exited while loading "
                               f"rules (status {proc.returncode})") from e
        with worker.send_lock:
            with worker.lock:
                worker.proc, worker.conn = proc, conn
                again = list(worker.pending.values())
            for request in again:
                self._send(conn, request)
        log.info("detection worker started", worker=worker.index, pid=proc.pid)

    def _read(self, worker: _Worker) -> None:
        while not self._closing.is_set():
            conn = worker.conn
            if conn is None:
                return
            try:
                if not conn.poll(1.0):
                    self._check_stuck(worker)
                    continue
                req_id, ok, result = pickle.loads(conn.recv_bytes())
            except (EOFError, OSError, pickle.UnpicklingError):
                if self._closing.is_set():
                    return
                self._restart(worker)
                continue
            with worker.lock:
                request = worker.pending.pop(req_id, None)
            if request is None:
                continue
            if ok:
                request.future.set_result(result)
            else:
                request.future.set_exception(WorkerFailed(str(result)))

    def _check_stuck(self, worker: _Worker) -> None:
        with worker.lock:
            first = next(iter(worker.pending.values()), None)
            proc = worker.proc
        if (first is not None and first.sent and proc is not None
                and time.monotonic() - first.sent > self.settings.timeout):
            log.error("detection worker stuck on a request: killed", worker=worker.index,
                      pid=proc.pid, seconds=round(time.monotonic() - first.sent, 1))
            proc.kill()

    def _restart(self, worker: _Worker) -> None:
        with worker.send_lock, worker.lock:
            conn, proc = worker.conn, worker.proc
            worker.conn = None
            first = next(iter(worker.pending.items()), None)
            if first is not None:
                first[1].attempts += 1
                if first[1].attempts >= MAX_ATTEMPTS:
                    del worker.pending[first[0]]
                    worker.given_up += 1
                    first[1].future.set_exception(WorkerFailed(
                        f"detection worker {worker.index} died {MAX_ATTEMPTS} times "
                        f"on this batch: given up"))
        status = None
        if proc is not None:
            proc.kill()
            status = proc.wait()
        if conn is not None:
            conn.close()
        worker.restarts += 1
        log.error("detection worker died: restarting it; its agents' correlation state "
                  "starts afresh", worker=worker.index, status=status,
                  pending=len(worker.pending))
        while not self._closing.is_set():
            try:
                self._start(worker)
                return
            except Exception as e:
                log.error("detection worker failed to start; retrying", worker=worker.index,
                          error=str(e))
                self._closing.wait(1.0)
