"""The collector's configuration: frozen dataclasses built from YAML, strictly."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common.errors import ConfigError
from common.yamlconf import Duration, Size, from_dict, load_mapping


def _positive(owner: object) -> None:
    """Refuse a budget of zero or less: counts at least 1, durations and rates above 0
    (from_dict names the section and the line)."""
    for name, value in vars(owner).items():
        if isinstance(value, bool):
            continue
        if isinstance(value, int) and value < 1:
            raise TypeError(f"{name} must be at least 1, got {value!r}")
        if isinstance(value, float) and not value > 0:
            raise TypeError(f"{name} must be more than 0, got {value!r}")


@dataclass(frozen=True)
class LimitsConfig:
    """The events server (mutual TLS): per-message, per-agent and per-connection limits."""

    max_message_bytes: Size = Size(4 * 1024 * 1024)  # larger: RESOURCE_EXHAUSTED
    max_batch_events: int = 1000          # a larger batch is refused; agents are told
    window: int = 4                       # batches an agent may have in flight
    events_per_second: float = 50_000.0   # per agent, across all its streams
    max_streams: int = 2048               # open streams, all agents together (a thread each)
    max_streams_per_agent: int = 2        # one, plus one while a dead one times out
    connection_idle: Duration = Duration(300.0)      # no call on it: closed
    connection_age: Duration = Duration(3600.0)      # then GOAWAY, then the grace
    connection_age_grace: Duration = Duration(60.0)  # for calls under way at GOAWAY
    handshake_timeout: Duration = Duration(20.0)     # TCP up, TLS not done: closed
    max_seq_gap: int = 10_000_000     # sequence numbers an agent may skip at first
    max_seq_rate: float = 50_000.0    # ... and that allowance's growth per second

    def __post_init__(self) -> None:
        _positive(self)


@dataclass(frozen=True)
class EnrollmentConfig:
    """The enrollment server (server TLS, reachable without any secret): a small budget."""

    threads: int = 4                      # handler threads; a stuck call holds one
    max_concurrent: int = 16              # calls in progress, all sources together
    deadline: Duration = Duration(5.0)    # to send the request, from the call's start
    # when more than half the threads are taken by calls still waiting for their request:
    # a prompt client's request is there already, a slow-loris call is let go quickly
    deadline_under_pressure: Duration = Duration(0.25)  # once half the threads wait
    per_address_concurrent: int = 2       # calls in progress from one address
    per_address_per_minute: float = 30.0  # attempts from one address (token bucket)
    per_address_burst: int = 10           # attempts one address may make at once
    log_window: Duration = Duration(60.0)  # refusals logged once per address per window
    max_addresses: int = 4096             # tracked sources; beyond, one shared entry

    def __post_init__(self) -> None:
        _positive(self)


@dataclass(frozen=True)
class ArchiveConfig:
    enabled: bool | None = None   # default: on unless Elasticsearch is configured


@dataclass(frozen=True)
class ElasticsearchConfig:
    url: tuple[str, ...] = ()             # set it to index into Elasticsearch
    # secrets: never in a repr, a log line or (preferably) the command line; see
    # collector/credentials.py for the files and environment variables that set them
    api_key: str | None = field(default=None, repr=False)  # base64 id:key (api_key_file!)
    api_key_file: Path | None = None      # the API key from a file (never argv)
    username: str | None = None           # basic auth, with password or password_file
    password: str | None = field(default=None, repr=False)  # better: password_file
    password_file: Path | None = None     # the password from a file
    ca: Path | None = None                # the cluster's CA certificate (PEM)
    index_prefix: str = "sisguard"        # PREFIX-{events,alerts,deadletter}-YYYY.MM.DD
    shards: int = 1                       # of each daily index
    replicas: int = 0                     # of each daily index
    retention_days: int = 90              # older daily indices are deleted
    bulk_max_docs: int = 2000             # documents in one bulk request
    request_timeout: Duration = Duration(30.0)  # of one request to the cluster


@dataclass(frozen=True)
class RulesConfig:
    paths: tuple[Path, ...] = ()          # Sigma rule files or directories
    filters: tuple[Path, ...] = ()        # Sigma filters for local false positives
    reload: bool = True                   # re-read changed rule files within 5 s


@dataclass(frozen=True)
class DetectionConfig:
    """Bounds of the detection engine (collector/detection: clock.py, correlation.py,
    patterns.py say what each does)."""

    max_state_bytes: Size = Size(256 * 1024 * 1024)  # all correlation state, shared equally
    max_pattern_text: Size = Size(64 * 1024)         # characters a regex or wildcard sees
    clock_ahead: Duration = Duration(300.0)          # @timestamp trusted up to this ahead
    clock_behind: Duration = Duration(7 * 86400.0)   # and this far behind event.ingested
    # detection processes (collector/detection/workers.py); 1: on the ingest threads;
    # unset: the cores the collector may use, minus one, at least 1
    workers: int | None = None

    def __post_init__(self) -> None:
        if self.workers is not None and (isinstance(self.workers, bool) or self.workers < 1):
            raise TypeError(f"workers must be at least 1, got {self.workers!r}")


@dataclass(frozen=True)
class HealthConfig:
    offline_after_intervals: int = 3      # missed heartbeats before agent_offline


@dataclass(frozen=True)
class MetricsConfig:
    """Prometheus metrics over HTTP (collector/metrics.py); off unless ``listen`` is set."""

    listen: str | None = None          # HOST:PORT serving /metrics, e.g. 127.0.0.1:9464
    max_connections: int = 4           # scrapes served at once; one more is closed
    timeout: Duration = Duration(5.0)  # a client slower than this is let go
    max_agent_series: int = 5000       # per-agent series (beyond: the totals only)

    def __post_init__(self) -> None:
        _positive(self)


@dataclass(frozen=True)
class PkiConfig:
    crl_path: Path | None = None           # default: DATA_DIR/pki/crl.pem (may be shared)
    revocation_poll: Duration = Duration(2.0)  # re-read the shared revocation list
    agent_lifetime: Duration = Duration(90 * 86400.0)   # 1 to 397 days
    server_lifetime: Duration = Duration(397 * 86400.0)  # 30 to 825 days
    renew_server_before: Duration = Duration(30 * 86400.0)  # re-issue this long before
    # tests only: agent certificates this short (seconds), to see them renew
    test_agent_lifetime: Duration | None = None   # tests only: seconds, to see renewal

    def __post_init__(self) -> None:
        day = 86400.0
        for name, low, high in (("agent_lifetime", 1, 397), ("server_lifetime", 30, 825),
                                ("renew_server_before", 1, 90)):
            value = getattr(self, name)
            if not low * day <= value <= high * day:
                raise ConfigError(f"pki.{name}: {value / day:g} days is outside "
                                  f"{low} to {high} days")
        if self.renew_server_before >= self.server_lifetime / 2:
            raise ConfigError("pki.renew_server_before must be under half of "
                              "pki.server_lifetime")
        if self.revocation_poll < 0.1:
            raise ConfigError("pki.revocation_poll: at least 0.1 s")


@dataclass(frozen=True)
class CollectorConfig:
    data_dir: Path = Path("/var/lib/sisguard-collector")  # CA, tokens, agents, archive
    listen: str = "0.0.0.0:4443"          # events, mutual TLS
    enroll_listen: str | None = None       # enrollment, server TLS; default: listen port + 1
    log_level: str = "info"               # debug, info, warning, error
    print_alerts: bool = False            # alerts also as JSON lines on stdout
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    enrollment: EnrollmentConfig = field(default_factory=EnrollmentConfig)
    archive: ArchiveConfig = field(default_factory=ArchiveConfig)
    elasticsearch: ElasticsearchConfig = field(default_factory=ElasticsearchConfig)
    rules: RulesConfig = field(default_factory=RulesConfig)
    detection: DetectionConfig = field(default_factory=DetectionConfig)
    health: HealthConfig = field(default_factory=HealthConfig)
    pki: PkiConfig = field(default_factory=PkiConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    # upstream outputs by a name of yours: {type: syslog|https|..., its own keys}
    # (collector/outputs/registry.py checks each against its type)
    outputs: dict[str, Any] = field(default_factory=dict)

    @property
    def archive_enabled(self) -> bool:
        if self.archive.enabled is None:
            return not self.elasticsearch.url
        return self.archive.enabled


def load_config(path: Path | None, overrides: dict[str, Any]) -> CollectorConfig:
    """The YAML file (if any), then flags on top (flags win)."""
    data: dict[str, Any] = load_mapping(path) if path else {}
    merged = _merge(data, overrides)
    source = str(path) if path else "<flags>"
    config = from_dict(CollectorConfig, merged, source=source)
    from collector.outputs.registry import parse_outputs

    parse_outputs(config.outputs, source=source)   # a wrong output fails here, at start
    return config


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


def check_config(path: Path) -> list[ConfigError]:
    """Every problem of a collector config file, each with its file, line and key path."""
    errors: list[ConfigError] = []
    try:
        data = load_mapping(path)
    except ConfigError as e:
        return [e]
    config = from_dict(CollectorConfig, data, source=str(path), errors=errors)
    from collector.outputs.registry import parse_outputs

    parse_outputs(config.outputs, source=str(path), errors=errors)
    return errors
