"""``config show``: the effective configuration as YAML, every key with a comment.

Each key is printed with its value, its default when the value differs, and the one-line
comment that stands beside the field in the config dataclass's source (the code is the
documentation: ``max_bytes: Size = Size(512 * MiB)  # oldest dropped first``). Secrets
(passwords, API keys, tokens) are masked.
"""

from __future__ import annotations

import dataclasses
import enum
import inspect
import io
import json
import re
import tokenize
from pathlib import Path
from typing import Any

from common.yamlconf import Duration, Size

SECRET = re.compile(r"(password|api_key|token|secret|private_key)", re.IGNORECASE)
_FIELD = re.compile(r"^\s+([a-z_][a-z0-9_]*)\s*:")


_COMMENTS: dict[type, dict[str, str]] = {}


def field_comments(cls: type) -> dict[str, str]:
    """Field name -> the comment on its line in ``cls``'s source (empty when none)."""
    if cls not in _COMMENTS:
        _COMMENTS[cls] = _read_comments(cls)
    return _COMMENTS[cls]


def _read_comments(cls: type) -> dict[str, str]:
    try:
        source = inspect.getsource(cls)
    except (OSError, TypeError):
        return {}
    comments: dict[str, str] = {}
    lines = source.splitlines()
    try:
        for tok in tokenize.generate_tokens(io.StringIO(source).readline):
            if tok.type != tokenize.COMMENT:
                continue
            match = _FIELD.match(lines[tok.start[0] - 1])
            if match and match.group(1) not in comments:
                comments[match.group(1)] = tok.string.lstrip("#").strip()
    except (tokenize.TokenError, IndentationError):
        return comments
    return comments


def _scalar(value: Any, hint_default: Any = None) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, Duration):
        return _duration(float(value))
    if isinstance(value, Size):
        return _size(int(value))
    if isinstance(value, enum.Enum):
        return _scalar(value.value)
    if isinstance(value, Path):
        return json.dumps(str(value), ensure_ascii=False) if _needs_quotes(str(value)) \
            else str(value)
    if isinstance(value, (int, float)):
        return repr(value)
    text = str(value)
    return json.dumps(text, ensure_ascii=False) if _needs_quotes(text) else text


_NUMBER = re.compile(r"^[-+]?(\d[\d_]*(\.\d*)?|\.\d+)([eE][-+]?\d+)?$|^0[xob]")


def _needs_quotes(text: str) -> bool:
    return (not text or bool(_NUMBER.match(text)) or text != text.strip()
            or text[0] in "!&*[]{}|>'\"%@`#,?:-" or ": " in text or " #" in text
            or text.lower() in ("true", "false", "yes", "no", "null", "on", "off", "~"))


def _duration(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{round(seconds * 1000)}ms" if seconds < 1 else f"{seconds}s"


def _size(n: int) -> str:
    for unit, size in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if n >= size and n % size == 0:
            return f"{n // size}{unit}"
    return str(n)


def _masked(name: str, value: Any) -> Any:
    if value not in (None, "", ()) and SECRET.search(name):
        return "********"
    return value


def _is_flow(value: Any) -> bool:
    return isinstance(value, (tuple, list)) and all(
        not dataclasses.is_dataclass(v) and not isinstance(v, dict) for v in value)


def _flow(value: Any) -> str:
    if isinstance(value, (tuple, list)):
        return "[" + ", ".join(_scalar(v) for v in value) + "]"
    return _scalar(value)


def render(config: Any, *, defaults: Any | None = None, indent: int = 0) -> list[str]:
    """YAML lines for the dataclass instance ``config``; ``defaults`` an instance of the
    same class built with no settings (its values are named where they differ)."""
    cls = type(config)
    if defaults is None:
        try:
            defaults = cls()
        except (TypeError, ValueError):
            defaults = None
    comments = field_comments(cls)
    pad = "  " * indent
    lines: list[str] = []
    for f in dataclasses.fields(config):
        if not f.init:
            continue
        value = getattr(config, f.name)
        default = getattr(defaults, f.name, None) if defaults is not None else None
        comment = comments.get(f.name, "")
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            lines.append(f"{pad}{f.name}:" + (f"  # {comment}" if comment else ""))
            lines.extend(render(value, defaults=default, indent=indent + 1))
            continue
        if isinstance(value, dict):
            lines.append(f"{pad}{f.name}:" + (" {}" if not value else "")
                         + (f"  # {comment}" if comment else ""))
            for key, item in value.items():
                if dataclasses.is_dataclass(item) and not isinstance(item, type):
                    lines.append(f"{pad}  {key}:")
                    lines.extend(render(item, indent=indent + 2))
                else:
                    lines.append(f"{pad}  {key}: {_flow(_masked(key, item))}")
            continue
        if isinstance(value, (tuple, list)) and not _is_flow(value):
            lines.append(f"{pad}{f.name}:" + (f"  # {comment}" if comment else ""))
            for item in value:
                sub = render(item, indent=indent + 2)
                lines.append(f"{pad}  - {sub[0].strip()}")
                lines.extend(sub[1:])
            continue
        text = f"{pad}{f.name}: {_flow(_masked(f.name, value))}"
        notes = [comment] if comment else []
        if defaults is not None and value != default:
            notes.append(f"default: {_flow(_masked(f.name, default))}")
        lines.append(text + (f"  # {'; '.join(notes)}" if notes else ""))
    return lines
