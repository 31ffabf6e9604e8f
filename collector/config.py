"""The collector's configuration: frozen dataclasses built from YAML, strictly."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common.yamlconf import Duration, Size, from_dict, load_mapping


@dataclass(frozen=True)
class LimitsConfig:
    max_message_bytes: Size = Size(4 * 1024 * 1024)
    max_batch_events: int = 1000
    window: int = 4
    events_per_second: float = 50_000.0
    max_streams: int = 512
    max_seq_gap: int = 10_000_000     # sequence numbers: see collector/sequence.py
    max_seq_rate: float = 50_000.0


@dataclass(frozen=True)
class ArchiveConfig:
    enabled: bool | None = None   # default: on unless Elasticsearch is configured


@dataclass(frozen=True)
class ElasticsearchConfig:
    url: tuple[str, ...] = ()
    api_key: str | None = None
    username: str | None = None
    password: str | None = None
    ca: Path | None = None
    index_prefix: str = "sisguard"
    shards: int = 1
    replicas: int = 0
    retention_days: int = 90
    bulk_max_docs: int = 2000
    request_timeout: Duration = Duration(30.0)


@dataclass(frozen=True)
class RulesConfig:
    paths: tuple[Path, ...] = ()
    filters: tuple[Path, ...] = ()
    reload: bool = True


@dataclass(frozen=True)
class HealthConfig:
    offline_after_intervals: int = 3


@dataclass(frozen=True)
class CollectorConfig:
    data_dir: Path = Path("/var/lib/sisguard-collector")
    listen: str = "0.0.0.0:4443"          # events, mutual TLS
    enroll_listen: str | None = None       # enrollment, server TLS; default: listen port + 1
    log_level: str = "info"
    print_alerts: bool = False
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    archive: ArchiveConfig = field(default_factory=ArchiveConfig)
    elasticsearch: ElasticsearchConfig = field(default_factory=ElasticsearchConfig)
    rules: RulesConfig = field(default_factory=RulesConfig)
    health: HealthConfig = field(default_factory=HealthConfig)

    @property
    def archive_enabled(self) -> bool:
        if self.archive.enabled is None:
            return not self.elasticsearch.url
        return self.archive.enabled


def load_config(path: Path | None, overrides: dict[str, Any]) -> CollectorConfig:
    """The YAML file (if any), then flags on top (flags win)."""
    data: dict[str, Any] = load_mapping(path) if path else {}
    merged = _merge(data, overrides)
    return from_dict(CollectorConfig, merged, source=str(path) if path else "<flags>")


def _merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    out = copy.copy(base)  # a PositionedDict stays one: errors keep their line
    for key, value in top.items():
        if value is None:
            continue
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out
