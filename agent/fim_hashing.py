"""File digests, and helper processes that compute them in parallel for baseline scans.

A baseline scan hashes every file under a root. In one Python process the walk, the
baseline inserts and the hashing threads take turns on the GIL, and two threads end up
slower than one; so a baseline scan hands lists of paths to ``HashWorkers``: helper
processes (``python -m agent.fim_hashing``) that hash and read extended attributes, one
per core. They live only as long as the scan, speak length-prefixed ``marshal`` over
their pipes, and exit when their stdin closes (also when the agent is killed).

This module imports only the standard library: a worker starts in a few milliseconds.
"""

from __future__ import annotations

import contextlib
import hashlib
import marshal
import os
import signal
import struct
import subprocess
import sys
import threading
from collections import deque
from concurrent.futures import Future
from typing import Any, BinaryIO, Union

WHOLE_READ = 1 << 20      # files up to this size are read with one call
READ_CHUNK = 1 << 20
_LENGTH = struct.Struct("<I")

# what a worker returns per path: (hashes, xattr digest), or (errno, message)
Digests = tuple[dict[str, str], "str | None"]
Failure = tuple[int, str]
Result = Union[Digests, Failure]   # a runtime alias: no X | Y on Python 3.9


def hash_bytes(data: bytes, algorithms: tuple[str, ...]) -> dict[str, str]:
    return {a: hashlib.new(a, data).hexdigest() for a in algorithms}


def digest_file(path: str, algorithms: tuple[str, ...], limit: int) -> dict[str, str]:
    """Hex digests of a regular file (empty if larger than ``limit``). Raises OSError.

    Never follows a final symlink. Small files are read in one call and hashed from
    bytes, larger ones in 1 MiB reads (hashlib releases the GIL on both).
    """
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        size = os.fstat(fd).st_size
        if size > limit:
            return {}
        if size < WHOLE_READ:
            data = os.read(fd, WHOLE_READ)
            if len(data) < WHOLE_READ:
                return hash_bytes(data, algorithms)
            hashers = [hashlib.new(a, data) for a in algorithms]   # it grew meanwhile
        else:
            hashers = [hashlib.new(a) for a in algorithms]
        while data := os.read(fd, READ_CHUNK):
            for h in hashers:
                h.update(data)
        return {a: h.hexdigest() for a, h in zip(algorithms, hashers)}
    finally:
        os.close(fd)


def xattr_digest(path: str) -> str | None:
    """A digest of the extended attributes (ACLs are ``system.posix_acl_*``), or None."""
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError:
        return None
    if not names:
        return None
    h = hashlib.sha256()
    for name in sorted(names):
        try:
            value = os.getxattr(path, name, follow_symlinks=False)
        except OSError:
            continue
        h.update(name.encode() + b"=" + value + b"\0")
    return h.hexdigest()


def digest_many(paths: list[str], algorithms: tuple[str, ...], limit: int,
                xattrs: bool) -> list[Result]:
    out: list[Result] = []
    for path in paths:
        try:
            out.append((digest_file(path, algorithms, limit),
                        xattr_digest(path) if xattrs else None))
        except OSError as e:
            out.append((e.errno or 0, e.strerror or str(e)))
    return out


def as_error(result: Failure, path: str) -> OSError:
    """The ``OSError`` (``FileNotFoundError``, ``PermissionError``, ...) a worker saw."""
    errno, message = result
    return OSError(errno, message, path)


def _write(stream: BinaryIO, obj: Any) -> None:
    data = marshal.dumps(obj)
    stream.write(_LENGTH.pack(len(data)) + data)
    stream.flush()


def _read(stream: BinaryIO) -> Any:
    head = stream.read(_LENGTH.size)
    if len(head) < _LENGTH.size:
        return None
    (n,) = _LENGTH.unpack(head)
    data = stream.read(n)
    if len(data) < n:
        return None
    return marshal.loads(data)


class HashWorkers:
    """``workers`` helper processes; ``submit(paths)`` -> Future of one ``Result`` each.

    Requests go to the workers in turn; a reader thread per worker resolves futures in
    the order that worker received them. A worker that dies fails its futures (the scan
    counts those paths as errors and the next scan hashes them again).
    """

    def __init__(self, workers: int, algorithms: tuple[str, ...], limit: int,
                 xattrs: bool) -> None:
        package_parent = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(
            filter(None, [package_parent, os.environ.get("PYTHONPATH")]))}
        self._procs: list[subprocess.Popen[bytes]] = []
        self._queues: list[deque[Future[list[Result]]]] = []
        self._readers: list[threading.Thread] = []
        self._lock = threading.Lock()   # the queues and the turn
        self._writing = [threading.Lock() for _ in range(workers)]   # a request at a time
        self._next = 0
        try:
            for i in range(workers):
                proc = subprocess.Popen(
                    [sys.executable, "-m", "agent.fim_hashing", ",".join(algorithms),
                     str(limit), "1" if xattrs else "0"],
                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, close_fds=True)
                queue: deque[Future[list[Result]]] = deque()
                reader = threading.Thread(target=self._collect, args=(proc, queue),
                                          name=f"fim-hash-{i}", daemon=True)
                self._procs.append(proc)
                self._queues.append(queue)
                self._readers.append(reader)
                reader.start()
        except BaseException:
            self.close()
            raise

    def __len__(self) -> int:
        return len(self._procs)

    def submit(self, paths: list[str]) -> Future[list[Result]]:
        future: Future[list[Result]] = Future()
        with self._lock:
            i = self._next
            self._next = (i + 1) % len(self._procs)
        proc = self._procs[i]
        # Not under _lock: a write can block until the worker reads, and the worker
        # reads only once the reader thread (which takes _lock) has taken its answer.
        with self._writing[i]:
            with self._lock:
                self._queues[i].append(future)
            try:
                assert proc.stdin is not None
                _write(proc.stdin, paths)   # type: ignore[arg-type]
            except (OSError, ValueError) as e:
                with self._lock:
                    if future in self._queues[i]:
                        self._queues[i].remove(future)
                if not future.done():
                    future.set_exception(OSError(f"hash worker {proc.pid} gone: {e}"))
        return future

    def _collect(self, proc: subprocess.Popen[bytes], queue: deque[Future[list[Result]]]
                 ) -> None:
        assert proc.stdout is not None
        while True:
            results = _read(proc.stdout)   # type: ignore[arg-type]
            if results is None:
                break
            with self._lock:
                future = queue.popleft()
            future.set_result(results)
        with self._lock:
            pending = list(queue)
            queue.clear()
        for future in pending:
            future.set_exception(OSError(f"hash worker {proc.pid} exited "
                                         f"({proc.poll()})"))

    def close(self) -> None:
        for proc in self._procs:
            if proc.stdin is not None:
                with contextlib.suppress(OSError):
                    proc.stdin.close()
        for proc in self._procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            if proc.stdout is not None:
                proc.stdout.close()
        for reader in self._readers:
            reader.join(timeout=5)

    def __enter__(self) -> HashWorkers:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def main() -> int:
    """The worker: read path lists from stdin, write their results to stdout."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)   # Ctrl-C is for the scan that runs us
    algorithms = tuple(sys.argv[1].split(","))
    limit, xattrs = int(sys.argv[2]), sys.argv[3] == "1"
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    while (paths := _read(stdin)) is not None:
        _write(stdout, digest_many(paths, algorithms, limit, xattrs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
