"""Web roots found by themselves: what the nginx and Apache configurations name.

``web_roots: auto`` (the default) reads each of ``web_server_configs`` that exists (by
default Debian's and RHEL's main files) and returns the web roots and logs they name.
The agent watches every root with FIM (tagged ``web_root``, content checks on) and
re-reads the configurations every ``web_roots_poll`` (one minute by default).

Other code (the web-log sensor) takes the logs from ``web_logs(discovery)``:
``(path, format hint, vhost)`` per access or error log.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from agent.timer import Job, Timer
from agent.webconf import Found, Limits, WebLog, WebRoot, shown
from agent.webconf_apache import parse_apache
from agent.webconf_nginx import parse_nginx
from common.logs import get_logger

log = get_logger("sisguard.agent.webroots")

DEFAULT_CONFIGS = ("/etc/nginx/nginx.conf", "/etc/apache2/apache2.conf",
                   "/etc/httpd/conf/httpd.conf")
MODES = ("auto", "off")


@dataclass(frozen=True)
class Discovery:
    roots: tuple[WebRoot, ...] = ()
    logs: tuple[WebLog, ...] = ()
    configs: tuple[str, ...] = ()          # main files read
    files: int = 0                         # config files read in all
    errors: tuple[str, ...] = field(default=(), compare=False)

    def key(self) -> tuple[object, ...]:
        """What a re-read compares: the roots and logs, not where they were written."""
        return (tuple((r.path, r.server, r.vhost) for r in self.roots),
                tuple((x.path, x.kind, x.format, x.vhost) for x in self.logs))

    def details(self) -> dict[str, str]:
        """For the FIM sensor's heartbeat (bounded: the first roots and logs)."""
        return {"web_roots": _listed([r.path for r in self.roots]),
                "web_logs": _listed([x.path for x in self.logs]),
                "web_configs": _listed(list(self.configs))}


def _listed(items: list[str], limit: int = 20, max_chars: int = 2000) -> str:
    """``N: a, b, ...``: the first ``limit`` items, at most ``max_chars`` in all (a
    heartbeat stays small whatever the paths)."""
    if not items:
        return "0"
    text = ", ".join(shown(i) for i in items[:limit])
    if len(text) > max_chars:
        text = text[:max_chars] + "..."
    more = f" (+{len(items) - limit} more)" if len(items) > limit else ""
    return f"{len(items)}: {text}{more}"


def server_kind(path: str) -> str | None:
    """``nginx:`` / ``apache:`` prefix, else guessed from the path."""
    low = path.lower()
    if low.startswith(("nginx:", "apache:")):
        return low.split(":", 1)[0]
    if "nginx" in low:
        return "nginx"
    if "apache" in low or "httpd" in low:
        return "apache"
    return None


def discover(configs: tuple[str, ...] = DEFAULT_CONFIGS, *, limits: Limits | None = None
             ) -> Discovery:
    """Read every existing main config of ``configs``; one that fails costs only itself."""
    roots: list[WebRoot] = []
    logs: list[WebLog] = []
    read: list[str] = []
    errors: list[str] = []
    files = 0
    for entry in configs:
        kind = server_kind(entry)
        path = entry.split(":", 1)[1] if entry.lower().startswith(("nginx:", "apache:")) \
            else entry
        if kind is None:
            errors.append(f"{entry}: neither nginx nor apache (prefix it nginx: or apache:)")
            continue
        if not os.path.exists(path):
            continue
        try:
            found: Found = (parse_nginx(path, limits=limits) if kind == "nginx"
                            else parse_apache(path, limits=limits))
        except (OSError, ValueError, RecursionError) as e:
            errors.append(f"{path}: {e}")
            continue
        read.append(path)
        files += len(found.files)
        roots += [r for r in found.roots if r.path not in {x.path for x in roots}]
        logs += found.logs
        errors += found.errors
    return Discovery(tuple(roots), tuple(logs), tuple(read), files, tuple(errors))


def web_logs(discovery: Discovery) -> list[tuple[str, str, str | None]]:
    """The access and error logs found: ``(path, format hint, vhost)``. Format hints:
    ``combined``, ``common``, ``vhost_combined``, ``nginx:json`` (``escape=json``),
    ``nginx:<name>`` / ``apache:<name>`` (its string in ``WebLog.format_string``),
    ``nginx:error``, ``apache:error``."""
    return [(x.path, x.format, x.vhost) for x in discovery.logs]


def log_discovery(discovery: Discovery, *, reason: str) -> None:
    """One line per root, per log and per problem found."""
    for r in discovery.roots:
        log.info("web root found", path=shown(r.path), server=r.server,
                 vhost=shown(r.vhost or ""), directive=r.directive, source=shown(r.source),
                 reason=reason)
    for x in discovery.logs:
        log.info("web log found", path=shown(x.path), kind=x.kind, format=x.format,
                 server=x.server, vhost=shown(x.vhost or ""), source=shown(x.source),
                 reason=reason)
    for e in discovery.errors:
        log.warning("web server config", problem=shown(e), reason=reason)
    log.info("web server configs read", configs=[shown(c) for c in discovery.configs],
             files=discovery.files, roots=len(discovery.roots), logs=len(discovery.logs),
             reason=reason)


class Poller:
    """Re-reads the configurations every ``interval`` seconds in its own thread and calls
    ``on_change`` with the new discovery when its roots or logs differ (or a root came
    into being or went away: ``existing`` is part of what is compared)."""

    def __init__(self, configs: tuple[str, ...], interval: float, current: Discovery,
                 on_change: Callable[[Discovery], None], *, timer: Timer | None = None) -> None:
        self.configs, self.interval, self.on_change = configs, interval, on_change
        self._last = _state(current)
        self._stop = threading.Event()
        self._timer = timer   # the agent's timer thread; else a thread of its own
        self._job: Job | None = None
        self._thread = threading.Thread(target=self._run, name="web-roots", daemon=True)

    def start(self) -> None:
        if self._timer is None:
            self._thread.start()
        else:
            self._job = self._timer.every(self.interval, self._poll_guarded,
                                          name="web-roots", first=self.interval)

    def stop(self) -> None:
        self._stop.set()
        if self._job is not None:
            self._job.cancel(timeout=5)
        elif self._thread.is_alive():
            self._thread.join(timeout=5)

    def poll(self) -> bool:
        """One re-read; True if it changed (then ``on_change`` was called)."""
        found = discover(self.configs)
        state = _state(found)
        if state == self._last:
            return False
        self._last = state
        log_discovery(found, reason="config changed")
        self.on_change(found)
        return True

    def _poll_guarded(self) -> None:
        try:
            self.poll()
        except Exception:   # a bug here must not end the re-reads
            log.exception("web server configs: re-read failed")

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._poll_guarded()


def _state(d: Discovery) -> tuple[object, ...]:
    return (d.key(), tuple(os.path.isdir(r.path) for r in d.roots))
