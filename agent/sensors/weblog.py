"""Web server logs: follow nginx and Apache access and error logs, emit ``sisguard.web``.

Each configured log is followed like the auth log (``agent.platform.linux.logfollow``): across
logrotate's rename and ``copytruncate``, with the offset, inode and head hash saved in
``state_dir/offsets.json`` after every batch, so a restart resumes where the last run
stopped. A log never seen before is read from its end (``start_at``), a log that appears
later from its start. Not enabled by default; configure it::

    sensors: [fim, process, network, auth, inventory, weblog]
    sensor:
      weblog:
        paths:
          - {path: /var/log/nginx/access.log, format: combined, vhost: portal.example,
             root: /var/www/portal}
          - {path: /var/log/nginx/error.log, format: nginx_error}
          - {path: /var/log/nginx/api.json.log, format: json}
          - path: /var/log/apache2/custom.log
            format: '%h %l %u %t "%r" %>s %b "%{Referer}i" "%{User-Agent}i" %D'

Formats are described in ``agent.sensors.weblog_formats``; documents in
``agent.sensors.weblog_document`` and docs/events.md. Every line costs only itself: it is
cut at ``max_line`` bytes (``sisguard.web.truncated``), made valid text with
``common.text.escape_bytes``, and a line that does not parse is still sent
(``sisguard.web.parse_error``). ``WebLogSensor.add_logs`` adds logs while running (for
the web-root auto-discovery).
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.ecs import timestamp
from agent.platform.linux.logfollow import FileFollower
from agent.sensors.base import Sensor, SensorContext
from agent.sensors.weblog_document import DocumentBuilder
from agent.sensors.weblog_files import root_of_log
from agent.sensors.weblog_formats import FormatError, compile_format
from agent.webconf import WebLog, WebRoot
from common.errors import ConfigError
from common.logs import get_logger
from common.text import escape_bytes
from common.yamlconf import Duration, Size

log = get_logger("sisguard.agent.weblog")

SERVERS = ("", "nginx", "apache")
MAX_LOGS = 256


@dataclass(frozen=True)
class WebLogPath:
    """One log to follow: its path, its format (a name or a format string), the vhost
    it serves (``destination.domain`` when the format has none), its server, and the
    document root its requests are served from (``file.path``: weblog_files.py)."""

    path: Path
    format: str = "combined"
    vhost: str = ""
    server: str = ""                  # nginx | apache | "" (from the format)
    root: str = ""                    # the vhost's document root ("": not known)

    def __post_init__(self) -> None:
        # TypeError: from_dict turns it into a ConfigError at this mapping's line
        try:
            compile_format(self.format)
        except FormatError as e:
            raise TypeError(f"path {self.path}: format {self.format!r}: {e}") from e
        if self.server not in SERVERS:
            raise TypeError(f"path {self.path}: server {self.server!r} is not one of "
                            "nginx, apache")
        if self.root and not os.path.isabs(self.root):
            raise TypeError(f"path {self.path}: root {self.root!r} is not an absolute path")


def discovered_paths(logs: Iterable[WebLog], roots: Iterable[WebRoot] = ()
                     ) -> list[WebLogPath]:
    """The logs the web server configs name (``agent/webroots.py``) as paths to follow:
    a format a config defines by name is taken as its string; a log whose format is
    unknown or does not compile is left out, and said so in the log. An access log
    whose vhost has one document root among ``roots`` gets it (``root_of_log``)."""
    roots = tuple(roots)
    paths: list[WebLogPath] = []
    for found in logs:
        hint = found.format
        server = found.server if found.server in SERVERS else ""
        if hint in ("combined", "common", "vhost_combined"):
            fmt = hint
        elif hint == "nginx:json":
            fmt = "json"
        elif hint in ("nginx:error", "apache:error"):
            fmt = hint.replace(":", "_")
        elif found.format_string:
            fmt = found.format_string
        else:
            log.info("web log not followed: its format is not known", path=found.path,
                     format=hint)
            continue
        try:
            root = root_of_log(found, roots) if found.kind == "access" else ""
            paths.append(WebLogPath(Path(found.path), fmt, found.vhost or "", server, root))
        except TypeError as e:
            log.warning("web log not followed", path=found.path, error=str(e))
    return paths


@dataclass(frozen=True)
class WebLogConfig:
    # each entry a mapping (WebLogPath's keys) or just a path (combined format)
    paths: tuple[WebLogPath | str, ...] = ()
    poll_interval: Duration = Duration(0.5)
    rotate_grace: Duration = Duration(5.0)
    start_at: str = "end"             # for a log never seen before: "end" or "beginning"
    max_line: Size = Size(64 * 1024)  # longer lines are cut and flagged

    def __post_init__(self) -> None:
        if self.start_at not in ("end", "beginning"):
            raise ConfigError(f"weblog start_at {self.start_at!r}: 'end' or 'beginning'")
        if len(self.paths) > MAX_LOGS:
            raise ConfigError(f"weblog: more than {MAX_LOGS} paths")
        if not 256 <= self.max_line <= 1024 * 1024:
            raise ConfigError("weblog max_line: between 256 bytes and 1 MiB")

    def logs(self) -> tuple[WebLogPath, ...]:
        return tuple(p if isinstance(p, WebLogPath) else WebLogPath(Path(p))
                     for p in self.paths)


class ChunkedFollower(FileFollower):
    """The auth sensor's follower, reading at most ``CHUNK`` bytes of a file per poll: a
    busy web log read after a long stop (or a rotated file of gigabytes) is taken a chunk
    at a time instead of all at once into memory; ``backlog()`` says there is more."""

    CHUNK = 1024 * 1024

    def _read_size(self) -> int:
        return self.CHUNK

    def backlog(self) -> bool:
        """Whether a followed file has bytes past what was read."""
        files = [f for f, _, _ in self.old] + ([self.file] if self.file is not None else [])
        try:
            return any(f.tell() < os.fstat(f.fileno()).st_size for f in files)
        except (OSError, ValueError):
            return False


@dataclass
class _Log:
    spec: WebLogPath
    follower: ChunkedFollower
    builder: DocumentBuilder
    lines: int = 0
    unparsed: int = 0
    problem: str = ""


class WebLogSensor(Sensor):
    name = "weblog"
    config: WebLogConfig

    def __init__(self, config: WebLogConfig, context: SensorContext) -> None:
        super().__init__(config, context)
        self._state_path = context.state_dir / "offsets.json"
        self._logs: dict[Path, _Log] = {}
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._saved: dict[str, Any] = {}

    # -- state ------------------------------------------------------------------------
    def _load_state(self) -> dict[str, Any]:
        try:
            data = json.loads(self._state_path.read_text())
            return data if isinstance(data, dict) else {}
        except (OSError, ValueError):
            return {}

    def _save_state(self) -> None:
        with self._lock:
            logs = list(self._logs.values())
        data = dict(self._saved)
        data.update({str(entry.spec.path): entry.follower.state() for entry in logs})
        tmp = self._state_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data))
        os.replace(tmp, self._state_path)

    # -- logs -------------------------------------------------------------------------
    def add_logs(self, paths: Iterable[WebLogPath]) -> list[Path]:
        """Follow more logs (a path already followed is left as it is). Thread-safe;
        returns the paths added."""
        added: list[Path] = []
        for spec in paths:
            with self._lock:
                if spec.path in self._logs or len(self._logs) >= MAX_LOGS:
                    continue
            follower = ChunkedFollower(spec.path, self._saved.get(str(spec.path)),
                                    start_at_end=self.config.start_at == "end",
                                    grace=self.config.rotate_grace)
            follower.prime()  # "start at end" means the end as of now
            builder = DocumentBuilder(compile_format(spec.format), path=str(spec.path),
                                      vhost=spec.vhost, server=spec.server,
                                      root=spec.root)
            with self._lock:
                self._logs[spec.path] = _Log(spec, follower, builder)
            added.append(spec.path)
        if added:
            log.info("weblog following", paths=[str(p) for p in added])
            self._update_details()
        return added

    def _update_details(self) -> None:
        with self._lock:
            logs = list(self._logs.values())
        self.context.health.details["logs"] = ",".join(
            f"{e.spec.path}:{e.spec.format if len(e.spec.format) < 20 else 'custom'}"
            for e in logs)[:1000]

    # -- lifecycle --------------------------------------------------------------------
    def start(self) -> None:
        self.context.health.mode = "file"
        self._saved = self._load_state()
        logs = self.config.logs()
        missing = [str(p.path) for p in logs if not p.path.exists()]
        if missing:
            self.context.report_error("web log not found; waiting for it",
                                      {"file.path": missing})
        self.add_logs(logs)
        self._thread = threading.Thread(target=self._loop, name="weblog-files", daemon=True)
        self._thread.start()

    def join(self, timeout: float | None = None) -> None:
        if self._thread is not None:
            self._thread.join(timeout)

    # -- lines ------------------------------------------------------------------------
    def handle_line(self, entry: _Log, raw: bytes, seen: str) -> None:
        """One line: cut, made text, parsed, emitted; a failure costs only this line."""
        try:
            truncated = len(raw) > self.config.max_line + 1
            if truncated:
                raw = raw[:self.config.max_line]
            raw = raw.rstrip(b"\r\n")
            if not raw:
                return
            text = escape_bytes(raw)
            fields = entry.builder.fmt.parse(text)
            entry.lines += 1
            if fields is None:
                entry.unparsed += 1
            self.emit(entry.builder.document(text, fields, truncated=truncated, seen=seen))
        except Exception as e:  # a daemon never dies on one bad line
            self.context.health.count_error(f"{entry.spec.path}: {type(e).__name__}: {e}")
            log.exception("weblog line failed", path=str(entry.spec.path))

    def _poll(self, entry: _Log) -> int:
        try:
            lines = entry.follower.poll()
        except PermissionError as e:
            self.context.report_error(f"cannot read web log: {e}",
                                      {"file.path": str(entry.spec.path)})
            return -1
        except OSError as e:
            self.context.health.count_error(f"{entry.spec.path}: {e}")
            return 0
        problem = entry.follower.problem
        if problem != entry.problem:
            entry.problem = problem
            if problem:
                self.context.report_error(f"web log not followed: {problem}",
                                          {"file.path": str(entry.spec.path)})
        seen = timestamp()
        for raw in lines:
            self.handle_line(entry, raw, seen)
        return len(lines)

    def read_available(self, *, to_end: bool = True) -> int:
        """Read every log now, in the caller's thread: to its end, or (``to_end=False``)
        one chunk; save the offsets. Returns the lines read."""
        with self._lock:
            logs = list(self._logs.values())
        total = 0
        while True:
            read = sum(max(self._poll(entry), 0) for entry in logs)
            total += read
            if not (to_end and read and any(e.follower.backlog() for e in logs)):
                break
        self._save_state()
        return total

    def _loop(self) -> None:
        denied: dict[Path, int] = {}
        logs: list[_Log] = []
        try:
            while True:
                with self._lock:
                    logs = list(self._logs.values())
                read = 0
                for entry in logs:
                    if denied.get(entry.spec.path, 0) > 0:  # back off a log we cannot read
                        denied[entry.spec.path] -= 1
                        continue
                    n = self._poll(entry)
                    if n < 0:
                        denied[entry.spec.path] = 60
                    read += max(n, 0)
                if read:
                    self._save_state()
                busy = any(entry.follower.backlog() for entry in logs)  # a backlog: go on now
                if self._stop.wait(0 if busy else self.config.poll_interval):
                    break
            self.read_available(to_end=False)  # what arrived while stopping
            with self._lock:
                logs = list(self._logs.values())
        except Exception as e:
            self.context.report_error(f"weblog sensor stopped: {type(e).__name__}: {e}", {})
            log.exception("weblog loop failed")
        finally:
            for entry in logs:
                entry.follower.close()
