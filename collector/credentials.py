"""Elasticsearch secrets from a file, the environment or the config: never the log.

Each secret comes from the first of: its file (``--es-api-key-file`` or
``elasticsearch.api_key_file``), its value (``elasticsearch.api_key`` in the config, or
``--es-api-key``, which works but is visible in /proc), its environment variable
(``SISGUARD_ES_API_KEY``; ``SISGUARD_ES_PASSWORD`` for the password). A secret file must be
a regular file; one readable by others is used with a warning.
"""

from __future__ import annotations

import dataclasses
import os
import stat
from collections.abc import Mapping
from pathlib import Path

from collector.config import ElasticsearchConfig
from common.errors import SisguardError
from common.logs import get_logger

log = get_logger("sisguard.collector.credentials")

API_KEY_ENV = "SISGUARD_ES_API_KEY"
PASSWORD_ENV = "SISGUARD_ES_PASSWORD"
MAX_SECRET_BYTES = 64 * 1024


class CredentialError(SisguardError):
    """A secret file is missing, unreadable or not a secret."""


def read_secret_file(path: Path, *, what: str) -> str:
    """The secret in ``path`` (one line; the trailing newline dropped)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as e:
        raise CredentialError(f"{path}: {what}: {e.strerror}") from e
    with os.fdopen(fd, "rb") as f:
        info = os.fstat(f.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise CredentialError(f"{path}: {what}: not a regular file")
        if info.st_mode & 0o077:
            log.warning("secret file readable by others: chmod 600 it", path=str(path),
                        what=what, mode=f"{stat.S_IMODE(info.st_mode):o}")
        raw = f.read(MAX_SECRET_BYTES + 1)
    if len(raw) > MAX_SECRET_BYTES:
        raise CredentialError(f"{path}: {what}: over {MAX_SECRET_BYTES} bytes")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise CredentialError(f"{path}: {what}: not UTF-8 text (at byte {e.start})") from e
    value = text.rstrip("\r\n")
    if not value or "\n" in value:
        raise CredentialError(f"{path}: {what}: expected one line")
    return value


def _pick(file: Path | None, value: str | None, env: str, environ: Mapping[str, str],
          what: str) -> str | None:
    if file is not None:
        return read_secret_file(file, what=what)
    if value is not None:
        return value
    return environ.get(env) or None


def resolve_elasticsearch(config: ElasticsearchConfig,
                          environ: Mapping[str, str]) -> ElasticsearchConfig:
    """The config with api_key and password filled from their file or variable."""
    return dataclasses.replace(
        config,
        api_key=_pick(config.api_key_file, config.api_key, API_KEY_ENV, environ,
                      "elasticsearch API key"),
        password=_pick(config.password_file, config.password, PASSWORD_ENV, environ,
                       "elasticsearch password"),
    )
