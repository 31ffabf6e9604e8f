"""Web server log fields -> the ``sisguard.web`` ECS document (docs/events.md).

Every value is attacker text (the client chose the URL, the user agent, the referrer,
even the "IP" when a proxy header is logged): it arrives here already valid text
(``common.text``), is bounded, and lands only in fields whose type accepts any string;
``source.ip`` is set only to a real address (else ``source.address``), numbers only from
digits. A line that does not parse still gives a document with ``event.original`` and
``sisguard.web.parse_error: true``.
"""

from __future__ import annotations

import datetime as dt
import socket
from typing import Any

from agent.ecs import ECS_VERSION, Document, timestamp
from agent.sensors.weblog_files import served_path
from agent.sensors.weblog_formats import Fields, LineFormat

DATASET = "sisguard.web"
MAX_EXTENSION = 16
MAX_METHOD = 32
END_OF_SECOND = 0.999999

_MONTHS = {m: i + 1 for i, m in enumerate(
    ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"))}


def _offset(text: str) -> dt.timezone | None:
    if len(text) != 5 or text[0] not in "+-" or not text[1:].isdigit():
        return None
    minutes = int(text[1:3]) * 60 + int(text[3:5])
    return dt.timezone(dt.timedelta(minutes=-minutes if text[0] == "-" else minutes))


def parse_time(text: str) -> float | None:
    """``01/Dec/2026:22:15:26 +0000`` (nginx $time_local, Apache %t), ISO 8601
    (``$time_iso8601``), ``2026/12/01 22:15:26`` (nginx error log, local time) or
    ``Tue Dec 01 22:15:26.123456 2026`` (Apache error log, local time)."""
    try:
        if len(text) == 26 and text[2] == "/" and text[6] == "/" and text[11] == ":":
            month = _MONTHS.get(text[3:6])
            tz = _offset(text[21:])
            if month is None or tz is None:
                return None
            return dt.datetime(int(text[7:11]), month, int(text[0:2]), int(text[12:14]),
                               int(text[15:17]), int(text[18:20]), tzinfo=tz).timestamp()
        if len(text) == 19 and text[4] == "/" and text[7] == "/":
            return dt.datetime.strptime(text, "%Y/%m/%d %H:%M:%S").timestamp()
        if len(text) >= 24 and text[3] == " " and text[7] == " ":
            month = _MONTHS.get(text[4:7])
            parts = text[8:].split(" ")
            if month is None or len(parts) != 3:
                return None
            hms = parts[1].split(".")[0].split(":")
            return dt.datetime(int(parts[2]), month, int(parts[0]), int(hms[0]),
                               int(hms[1]), int(hms[2])).timestamp()
        if 19 <= len(text) <= 40 and text[4] == "-" and text[10] == "T":
            return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except (ValueError, IndexError, OverflowError):
        return None
    return None


class DocumentBuilder:
    """Builds documents for one log file; caches what repeats from line to line."""

    def __init__(self, fmt: LineFormat, *, path: str, vhost: str = "",
                 server: str = "", root: str = "") -> None:
        self.fmt = fmt
        self.root = root
        self.path = path
        self.vhost = vhost
        self.server = server or fmt.server
        self.hostname = socket.gethostname()
        self._time_text = ""
        self._time_value = ""
        self._ips: dict[str, bool] = {}

    def _timestamp(self, text: str | None, seen: str) -> str:
        """The logged time; a time logged to the second (``$time_local``, ``%t``) is
        taken at the end of its second (``.999999``): the request was logged at some
        moment of that second, and the end is the bound that keeps it after what the
        other sensors saw earlier in the same second (a web shell's upload, at
        microseconds, then its first request: rules/web/ correlate them in order)."""
        if not text:
            return seen
        if text != self._time_text:
            when = parse_time(text)
            if when is not None and when == int(when):
                when += END_OF_SECOND
            self._time_text = text
            self._time_value = timestamp(when) if when is not None else ""
        return self._time_value or seen

    def _is_ip(self, text: str) -> bool:
        known = self._ips.get(text)
        if known is None:
            known = _is_address(text)
            if len(self._ips) > 4096:
                self._ips.clear()
            self._ips[text] = known
        return known

    def document(self, raw_text: str, fields: Fields | None, *, truncated: bool = False,
                 seen: str | None = None) -> Document:
        """``raw_text``: the line as valid text, without its newline."""
        created = seen or timestamp()
        web: dict[str, Any] = {"format": self.fmt.name}
        if self.server:
            web["server"] = self.server
        if truncated:
            web["truncated"] = True
        error_log = self.fmt.error_log
        event: dict[str, Any] = {
            "kind": "event", "category": ["web"],
            "type": ["error"] if error_log else ["access"],
            "action": "error_log" if error_log else "request",
            "module": "sisguard", "dataset": DATASET,
            "original": raw_text, "created": created,
        }
        doc: Document = {
            "@timestamp": created, "event": event, "ecs": {"version": ECS_VERSION},
            "host": {"hostname": self.hostname}, "log": {"file": {"path": self.path}},
            "sisguard": {"web": web},
        }
        if self.vhost:
            doc["destination"] = {"domain": self.vhost}
        if fields is None:
            web["parse_error"] = True
            doc["message"] = raw_text
            return doc
        doc["@timestamp"] = self._timestamp(fields.get("time") or fields.get("time_iso"),
                                            created)
        self._fill(doc, fields, error_log)
        return doc

    def _fill(self, doc: Document, f: Fields, error_log: bool) -> None:
        client = f.get("client")
        if client and client != "-":
            key = "ip" if self._is_ip(client) else "address"
            doc["source"] = {key: client}
        user = f.get("user")
        if user and user != "-":
            doc["user"] = {"name": user}
        vhost = f.get("vhost")
        if vhost and vhost != "-" and not self.vhost:
            doc["destination"] = {"domain": vhost}
        if error_log:
            doc["log"]["level"] = f.get("level", "")
            doc["message"] = f.get("message", "")
            if f.get("pid", "").isdigit():
                doc["process"] = {"pid": int(f["pid"])}
        http: dict[str, Any] = {}
        request: dict[str, Any] = {}
        self._request(doc, f, request, http)
        status = f.get("status", "")
        if status.isdigit() and len(status) == 3:
            code = int(status)
            http["response"] = {"status_code": code}
            doc["event"]["outcome"] = "failure" if code >= 400 else "success"
        size = f.get("bytes", "")
        if size.isdigit() and len(size) < 19:
            http.setdefault("response", {})["body"] = {"bytes": int(size)}
        referer = f.get("referer")
        if referer and referer != "-":
            request["referrer"] = referer
        mime = f.get("content_type")
        if mime and mime != "-":
            request["mime_type"] = mime
        if request:
            http["request"] = request
        if http:
            doc["http"] = http
        agent = f.get("agent")
        if agent and agent != "-":
            doc["user_agent"] = {"original": agent}
        duration = _duration(f)
        if duration is not None:
            doc["event"]["duration"] = duration

    def _request(self, doc: Document, f: Fields, request: dict[str, Any],
                 http: dict[str, Any]) -> None:
        method, target, version = f.get("method"), f.get("uri"), f.get("protocol")
        line = f.get("request")
        if line:
            parts = line.split(" ")
            if len(parts) == 3 and parts[2].startswith("HTTP/"):
                method, target, version = parts
            elif len(parts) == 2 and parts[0].isalpha():  # HTTP/0.9
                method, target = parts
            else:
                doc["sisguard"]["web"]["bad_request_line"] = True
        if method and len(method) <= MAX_METHOD and method != "-":
            request["method"] = method
        if version and version.startswith("HTTP/"):
            http["version"] = version[5:]
        path, query = f.get("path"), f.get("query")
        if target is not None and target != "-":
            path, _, rest = target.partition("?")
            query = rest if _ else None
            url: dict[str, Any] = {"original": target, "path": path}
        elif path:
            url = {"path": path, "original": path + (f"?{query}" if query else "")}
        else:
            return
        if query and query != "-":
            url["query"] = query
        extension = _extension(url["path"])
        if extension:
            url["extension"] = extension
        doc["url"] = url
        if self.root and not self.fmt.error_log:
            served = served_path(self.root, url["path"])
            if served is not None:
                doc["file"] = {"path": served}
                doc["sisguard"]["web"]["root"] = self.root


def _is_address(text: str) -> bool:
    """An IPv4 or IPv6 address (what Elasticsearch's ``ip`` type takes)."""
    for family in (socket.AF_INET, socket.AF_INET6):
        try:
            socket.inet_pton(family, text)
            return True
        except (OSError, ValueError):  # ValueError: an embedded NUL
            continue
    return False


def _extension(path: str) -> str:
    name = path.rpartition("/")[2]
    stem, dot, ext = name.rpartition(".")
    if not dot or not stem or not ext or len(ext) > MAX_EXTENSION:
        return ""
    return ext.lower()


def _duration(f: Fields) -> int | None:
    """event.duration (nanoseconds) from nginx $request_time / Apache %T (seconds) or
    Apache %D (microseconds)."""
    micros = f.get("request_time_us", "")
    if micros.isdigit() and len(micros) < 15:
        return int(micros) * 1000
    seconds = f.get("request_time", "")
    if 0 < len(seconds) < 16:
        whole, _, frac = seconds.partition(".")
        if whole.isdigit() and (not frac or frac.isdigit()):
            return int(whole) * 1_000_000_000 + int((frac + "000000000")[:9])
    return None
