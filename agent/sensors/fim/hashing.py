"""File digests, and helper processes that compute them in parallel for baseline scans.

A baseline scan hashes every file under a root. In one Python process the walk, the
baseline inserts and the hashing threads take turns on the GIL, and two threads end up
slower than one; so a baseline scan hands lists of files to ``HashWorkers``: helper
processes that hash and read extended attributes, one per core. A helper runs isolated
(``python -I`` in ``/``: nothing from the caller's working directory or environment is
imported) and opens each file beneath the watched root (``agent.platform.linux.saferead``),
only the inode the scan saw. Helpers live only as long as the scan, speak length-prefixed
``marshal`` over their pipes, and exit when their stdin closes (also when the agent is
killed).

This module imports only the standard library (and ``agent.platform.linux.saferead``): a
worker starts in a few milliseconds.
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
from typing import Any, BinaryIO, NamedTuple, Optional, Union

from agent.platform.linux.saferead import Tree, iter_chunks, read_capped

WHOLE_READ = 1 << 20      # files up to this size are read with one call
MAX_XATTRS = 1000         # attribute names digested per file
SPARSE_MIN = 64 << 20     # a file larger than this, less than 1/8 allocated, is not hashed
# the helper: isolated (-I: no PYTHONPATH, no user site, no script or working directory
# on sys.path), started in /, finding the agent package only where this file lies
BOOTSTRAP = ("import sys; sys.path.append(sys.argv[1]); "
             "from agent.sensors.fim.hashing import main; sys.exit(main(sys.argv[2:]))")
_LENGTH = struct.Struct("<I")

# what a worker returns per path: (hashes, xattr digest), or (errno, message)
Digests = tuple[dict[str, str], Optional[str]]
Failure = tuple[int, str]
Result = Union[Digests, Failure]   # a runtime alias: no X | Y on Python 3.9


def hash_bytes(data: bytes, algorithms: tuple[str, ...]) -> dict[str, str]:
    return {a: hashlib.new(a, data).hexdigest() for a in algorithms}


class Item(NamedTuple):
    """A file to hash: its lexical path and the (device, inode) its lstat gave."""

    path: str
    dev: int
    ino: int
    mode: int

    @classmethod
    def of(cls, path: str, st: os.stat_result) -> Item:
        return cls(path, st.st_dev, st.st_ino, st.st_mode)


def mostly_holes(st: os.stat_result) -> bool:
    """A large sparse file (``truncate -s``): hashing it would read gigabytes of zeros
    that cost its maker nothing; it is not hashed (its size and mtime still count)."""
    return st.st_size > SPARSE_MIN and st.st_blocks * 512 < st.st_size // 8


def digest_fd(fd: int, algorithms: tuple[str, ...], limit: int) -> dict[str, str]:
    """Hex digests of the open regular file ``fd`` (empty if larger than ``limit``, or
    ``mostly_holes``).

    Small files are read in one call and hashed from bytes, larger ones in 1 MiB reads
    (hashlib releases the GIL on both); never more than ``limit`` bytes are read.
    """
    st = os.fstat(fd)
    if st.st_size > limit or mostly_holes(st):
        return {}
    data = read_capped(fd, min(WHOLE_READ, limit + 1))
    if len(data) < WHOLE_READ and len(data) <= limit:
        return hash_bytes(data, algorithms)
    hashers = [hashlib.new(a, data) for a in algorithms]
    total = len(data)
    for chunk in iter_chunks(fd, limit + 1 - total):
        total += len(chunk)
        for h in hashers:
            h.update(chunk)
    if total > limit:   # it grew past the cap while we read
        return {}
    return {a: h.hexdigest() for a, h in zip(algorithms, hashers)}


def digest_file(tree: Tree, path: str, algorithms: tuple[str, ...], limit: int,
                expect: os.stat_result | None = None) -> dict[str, str]:
    """Hex digests of the regular file ``path``, opened beneath ``tree``'s root (never
    through a link, non-blocking; with ``expect``, only the inode it describes).
    Raises OSError (``NotRegular``, ``Replaced``, ``ELOOP`` ...)."""
    fd = tree.open_file(path, expect)
    try:
        return digest_fd(fd, algorithms, limit)
    finally:
        os.close(fd)


def xattr_digest_fd(fd: int) -> str | None:
    """A digest of the extended attributes (ACLs are ``system.posix_acl_*``), or None."""
    try:
        names = os.listxattr(fd)
    except OSError:
        return None
    if not names:
        return None
    h = hashlib.sha256()
    for name in sorted(names)[:MAX_XATTRS]:
        try:
            value = os.getxattr(fd, name)
        except OSError:
            continue
        h.update(name.encode("utf-8", "surrogateescape") + b"=" + value + b"\0")
    return h.hexdigest()


def xattr_digest(tree: Tree, path: str, st: os.stat_result) -> str | None:
    """The xattr digest of a file or directory (through a descriptor opened beneath the
    root); None for links, FIFOs, sockets, devices (never opened)."""
    fd = tree.xattr_fd(path, st)
    if fd is None:
        return None
    try:
        return xattr_digest_fd(fd)
    finally:
        os.close(fd)


def digest_one(tree: Tree, item: Item, algorithms: tuple[str, ...], limit: int,
               xattrs: bool) -> Digests:
    """Hashes and xattr digest of one regular file, from one descriptor."""
    st = os.stat_result((item.mode, item.ino, item.dev, 0, 0, 0, 0, 0, 0, 0))
    fd = tree.open_file(item.path, st)
    try:
        return digest_fd(fd, algorithms, limit), xattr_digest_fd(fd) if xattrs else None
    finally:
        os.close(fd)


def digest_many(root: str, items: list[Item], algorithms: tuple[str, ...], limit: int,
                xattrs: bool) -> list[Result]:
    out: list[Result] = []
    try:
        tree = Tree(root)
    except OSError as e:
        return [(e.errno or 0, e.strerror or str(e)) for _ in items]
    with tree:
        for item in items:
            try:
                out.append(digest_one(tree, Item(*item), algorithms, limit, xattrs))
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


def reap(proc: subprocess.Popen[bytes], *, timeout: float) -> None:
    """Wait for a helper whose stdin is closed, kill it past ``timeout``, close its
    stdout (the hash helpers here, the YARA helper in yara_rules.py)."""
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    if proc.stdout is not None:
        proc.stdout.close()


class HashWorkers:
    """``workers`` helper processes; ``submit(paths)`` -> Future of one ``Result`` each.

    Requests go to the workers in turn; a reader thread per worker resolves futures in
    the order that worker received them. A worker that dies fails its futures (the scan
    counts those paths as errors and the next scan hashes them again).
    """

    def __init__(self, workers: int, algorithms: tuple[str, ...], limit: int,
                 xattrs: bool) -> None:
        package_parent = os.path.abspath(__file__)   # <parent>/agent/sensors/fim/hashing.py
        for _ in range(4):
            package_parent = os.path.dirname(package_parent)
        self._procs: list[subprocess.Popen[bytes]] = []
        self._queues: list[deque[Future[list[Result]]]] = []
        self._readers: list[threading.Thread] = []
        self._lock = threading.Lock()   # the queues and the turn
        self._writing = [threading.Lock() for _ in range(workers)]   # a request at a time
        self._next = 0
        try:
            for i in range(workers):
                proc = subprocess.Popen(
                    [sys.executable, "-I", "-c", BOOTSTRAP, package_parent,
                     ",".join(algorithms), str(limit), "1" if xattrs else "0"],
                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd="/", close_fds=True)
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

    def submit(self, root: str, items: list[Item]) -> Future[list[Result]]:
        """Hash ``items`` (regular files under the watched ``root``) in a helper."""
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
                _write(proc.stdin, (root, [tuple(i) for i in items]))  # type: ignore[arg-type]
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
        for proc in self._procs:   # their stdin closed above: they end together
            reap(proc, timeout=10)
        for reader in self._readers:
            reader.join(timeout=5)

    def __enter__(self) -> HashWorkers:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def main(argv: list[str] | None = None) -> int:
    """The worker: read (root, items) from stdin, write their results to stdout."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)   # Ctrl-C is for the scan that runs us
    args = sys.argv[1:] if argv is None else argv
    algorithms = tuple(args[0].split(","))
    limit, xattrs = int(args[1]), args[2] == "1"
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    while True:
        request = _read(stdin)
        if request is None:
            return 0
        root, items = request
        _write(stdout, digest_many(root, [Item(*i) for i in items], algorithms, limit,
                                   xattrs))


if __name__ == "__main__":
    sys.exit(main())
