"""YARA rules for content checks: compiled once, run in a helper process under a deadline.

``yara_rules: [paths]`` in the FIM config adds YARA rule files to the content checks.
Each file is compiled on its own first, so a broken one is reported with its file and
line (a ``ConfigError``, which the sensor turns into a ``sensor_error``) and the others
still load; the good ones are then compiled together, one namespace per file (its name
without ``.yar``/``.yara``).

YARA never opens a watched file: it is given the bytes the content check read through
``agent.platform.linux.saferead`` (beneath the root, no links, the inode hashed, at most
``content_max_bytes``). YARA's own ``timeout`` is checked only now and then (a rule like
``/a+/`` over 2 MiB of ``a`` ran 50 s past a 2 s timeout), so scans run in a helper
process (``python -I`` in ``/``, like the hash workers) that is killed when it has not
answered within ``yara_timeout`` + 1 s: a rule that matches everything, or is slow, costs
that file its timeout and nothing else (the next scan starts a new helper). After
``BREAKER_TIMEOUTS`` timeouts within a minute YARA rests for a minute (those files carry
``yara_error``: skipped), so that a user writing files crafted against a slow rule can
slow FIM down by a few timeouts a minute, not stall it. The helper is started on the first
scan and ends when its stdin closes.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.sensors.fim.hashing import reap
from agent.sensors.fim.yara_worker import read_message, write_message
from common.errors import ConfigError, Location
from common.logs import get_logger

log = get_logger("sisguard.agent.fim.yara")

BOOTSTRAP = ("import sys; sys.path.append(sys.argv[1]); "
             "from agent.sensors.fim.yara_worker import main; sys.exit(main(sys.argv[2:]))")
GRACE = 1.0                  # seconds past the YARA timeout before the helper is killed
# a run of timeouts (files crafted against a slow rule): YARA rests, FIM goes on
BREAKER_TIMEOUTS = 3         # timeouts within BREAKER_WINDOW seconds ...
BREAKER_WINDOW = 60.0
BREAKER_REST = 60.0          # ... and files are not YARA-scanned for this long
_WHERE = re.compile(r"^(?P<file>.*)\((?P<line>\d+)\): (?P<message>.*)$", re.DOTALL)


@dataclass(frozen=True)
class YaraMatch:
    rule: str
    namespace: str
    tags: tuple[str, ...]
    category: str            # the rule's meta ``category``, else "webshell"
    offset: int              # of its first string match (-1: none, a condition only)

    def fields(self) -> dict[str, Any]:
        return {"rule": self.rule, "namespace": self.namespace, "tags": list(self.tags)}


def _namespace(path: Path, taken: set[str]) -> str:
    stem = path.name
    for suffix in (".yara", ".yar"):
        if stem.lower().endswith(suffix):
            stem = stem[:-len(suffix)]
    name, n = stem or "rules", 1
    while name in taken:
        n += 1
        name = f"{stem}_{n}"
    taken.add(name)
    return name


def _error(path: Path, e: Exception) -> ConfigError:
    text = str(e)
    m = _WHERE.match(text)
    if m is not None:   # "file(line): message": the file may be an include
        return ConfigError(f"yara rule: {m['message']}",
                           location=Location(m["file"], int(m["line"])))
    return ConfigError(f"yara rules: {text}", location=Location(str(path)))


def compile_rules(paths: Iterable[Path]) -> tuple[bytes | None, list[ConfigError]]:
    """The good files of ``paths`` compiled together (saved, for the helper), and an
    error naming the file and line for each that does not compile."""
    paths = list(paths)
    if not paths:
        return None, []
    try:
        import yara
    except ImportError as e:
        return None, [ConfigError(f"yara_rules: yara-python is not installed ({e})",
                                  location=Location(str(paths[0])))]
    good: dict[str, str] = {}
    errors: list[ConfigError] = []
    taken: set[str] = set()
    for path in paths:
        try:
            yara.compile(filepath=str(path))
        except yara.Error as e:   # SyntaxError is one; also a missing or unreadable file
            errors.append(_error(path, e))
            continue
        good[_namespace(path, taken)] = str(path)
    if not good:
        return None, errors
    try:
        rules = yara.compile(filepaths=good)
        out = io.BytesIO()
        rules.save(file=out)
    except yara.Error as e:   # rules fine alone, clashing together (a shared include)
        return None, [*errors, _error(paths[0], e)]
    return out.getvalue(), errors


class YaraScanner:
    """Scans bytes with the compiled rules in a helper process; one scan at a time."""

    def __init__(self, compiled: bytes, *, timeout: float) -> None:
        self.compiled = compiled
        self.timeout = max(1, round(timeout))   # YARA takes whole seconds
        self.timeouts = 0        # scans whose helper was killed or timed out
        self.skipped = 0         # scans not made while resting after timeouts
        self._lock = threading.Lock()
        self._recent: list[float] = []   # monotonic times of the last timeouts
        self._rest_until = 0.0
        self._proc: subprocess.Popen[bytes] | None = None

    def _spawn(self) -> subprocess.Popen[bytes]:
        package_parent = os.path.abspath(__file__)   # <parent>/agent/sensors/fim/yara_rules.py
        for _ in range(4):
            package_parent = os.path.dirname(package_parent)
        proc = subprocess.Popen([sys.executable, "-I", "-c", BOOTSTRAP, package_parent,
                                 str(self.timeout)],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd="/",
                                close_fds=True)
        assert proc.stdin is not None
        write_message(proc.stdin.fileno(), self.compiled)
        return proc

    def _kill(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        with contextlib.suppress(OSError):
            proc.kill()
        proc.wait()
        for stream in (proc.stdin, proc.stdout):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()

    def _timed_out(self) -> None:
        now = time.monotonic()
        self.timeouts += 1
        self._recent = [t for t in self._recent if now - t < BREAKER_WINDOW] + [now]
        if len(self._recent) >= BREAKER_TIMEOUTS:
            self._recent.clear()
            self._rest_until = now + BREAKER_REST
            log.warning("yara scans rest after repeated timeouts", timeouts=BREAKER_TIMEOUTS,
                        rest_seconds=BREAKER_REST)

    def scan(self, data: bytes) -> tuple[list[YaraMatch], str]:
        """The rules that match ``data``, and what went wrong ("" when nothing did)."""
        with self._lock:
            if time.monotonic() < self._rest_until:
                self.skipped += 1
                return [], "yara scan skipped: resting after repeated timeouts"
            try:
                if self._proc is None or self._proc.poll() is not None:
                    self._kill()
                    self._proc = self._spawn()
                proc = self._proc
                assert proc.stdin is not None and proc.stdout is not None
                write_message(proc.stdin.fileno(), data)
                answer = read_message(proc.stdout.fileno(),
                                      time.monotonic() + self.timeout + GRACE)
            except OSError as e:
                self._kill()
                return [], f"yara helper failed: {e}"
            if answer is None:
                code = proc.poll()
                self._kill()
                if code is not None:   # it died (a crash, out of memory): not a timeout
                    return [], f"yara scan failed: the helper exited ({code})"
                self._timed_out()
                log.warning("yara scan stopped", seconds=self.timeout + GRACE)
                return [], f"yara scan stopped after {self.timeout + GRACE:g} s"
            kind, value = answer
            if kind == "timeout":
                self._timed_out()
                return [], f"yara scan timed out after {self.timeout} s"
            if kind == "error":
                return [], f"yara scan failed: {value}"
            return [YaraMatch(*m) for m in value], ""

    def close(self) -> None:
        with self._lock:
            proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.stdin is not None:
            with contextlib.suppress(OSError):
                proc.stdin.close()
        reap(proc, timeout=2)
