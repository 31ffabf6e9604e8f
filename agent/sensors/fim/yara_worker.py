"""The YARA helper process (``agent.sensors.fim.yara_rules`` starts and kills it).

It imports only the standard library and ``yara`` (the packages above it import nothing:
the sensor registry is lazy), so it starts in milliseconds: it reads the compiled rules
from stdin, then answers each block of bytes with the rules that match, until stdin
closes. Messages are length-prefixed ``marshal``.
"""

from __future__ import annotations

import io
import marshal
import os
import resource
import select
import signal
import struct
import sys
import time
from typing import Any

MAX_MATCHES = 64             # rules reported per file
MAX_MESSAGE = 64 << 20       # the compiled rules, or a file's bytes
MAX_MEMORY = 256 << 20       # the helper's address space
DEFAULT_CATEGORY = "webshell"
_LENGTH = struct.Struct("<I")


def write_message(fd: int, obj: Any) -> None:
    data = marshal.dumps(obj)
    view = memoryview(_LENGTH.pack(len(data)) + data)
    while view:
        view = view[os.write(fd, view):]


def _read_exact(fd: int, n: int, deadline: float | None) -> bytes | None:
    """``n`` bytes from ``fd``; None at end of file or past ``deadline`` (monotonic)."""
    chunks: list[bytes] = []
    while n > 0:
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                return None
        data = os.read(fd, min(n, 1 << 20))
        if not data:
            return None
        chunks.append(data)
        n -= len(data)
    return b"".join(chunks)


def read_message(fd: int, deadline: float | None = None, limit: int = MAX_MESSAGE) -> Any:
    head = _read_exact(fd, _LENGTH.size, deadline)
    if head is None:
        return None
    (n,) = _LENGTH.unpack(head)
    if n > limit:
        return None
    data = _read_exact(fd, n, deadline)
    return None if data is None else marshal.loads(data)


def _matches(found: list[Any]) -> list[tuple[str, str, tuple[str, ...], str, int]]:
    out = []
    for m in found[:MAX_MATCHES]:
        category = m.meta.get("category") if isinstance(m.meta, dict) else None
        offset = -1
        for s in m.strings:
            if s.instances:
                offset = s.instances[0].offset
                break
        out.append((str(m.rule), str(m.namespace), tuple(str(t) for t in m.tags),
                    category if isinstance(category, str) and category
                    else DEFAULT_CATEGORY, int(offset)))
    return out


def main(argv: list[str]) -> int:
    """The helper: the compiled rules, then (data -> matches) until stdin closes.

    Its address space is capped (``MAX_MEMORY``): a rule whose strings match every
    byte makes YARA keep a million matches per string (360 MB for two strings over
    2 MiB); capped, that scan fails alone with a memory error."""
    resource.setrlimit(resource.RLIMIT_AS, (MAX_MEMORY, MAX_MEMORY))
    import yara
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    timeout = int(argv[0])
    stdin, stdout = sys.stdin.fileno(), sys.stdout.fileno()
    compiled = read_message(stdin)
    if compiled is None:
        return 1
    rules = yara.load(file=io.BytesIO(compiled))
    while True:
        data = read_message(stdin)
        if data is None:
            return 0
        try:
            answer: tuple[str, Any] = ("ok", _matches(rules.match(data=data,
                                                                   timeout=timeout)))
        except yara.TimeoutError:
            answer = ("timeout", None)
        except (yara.Error, MemoryError, SystemError) as e:   # SystemError: out of memory
            answer = ("error", f"{type(e).__name__}: {e}"[:500])
        write_message(stdout, answer)
