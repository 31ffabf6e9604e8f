"""Hypothesis fuzzing, bounded (each property runs in a few seconds), of what takes
hostile input: the event decoder, the config loader, the rule loader.

* decoder: arbitrary bytes and arbitrary JSON-ish documents never raise out of the
  pipeline; each event is stored (and then any output can write it) or dead-lettered
  with a reason;
* config: arbitrary YAML gives the agent's and the collector's config, or a
  SisguardError with a location, never another exception;
* rules: arbitrary YAML documents given to the detection loader give rules, or errors
  naming the file and line, never a crash.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.config import load_config as load_agent_config
from collector.config import load_config as load_collector_config
from collector.detection import RuleLoadError, load_rules
from collector.pipeline import AgentIdentity, Pipeline, Validate
from common.errors import SisguardError
from sisguard.v1 import sisguard_pb2 as pb

AGENT = AgentIdentity("fuzz", "fuzz-host", "fuzz-org", "0")
FUZZ = settings(max_examples=60, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

# keys that reach mapped fields, collector-owned fields and config sections
KEYS = st.sampled_from([
    "@timestamp", "event", "kind", "dataset", "id", "sequence", "source", "ip", "port",
    "file", "size", "mtime", "path", "process", "pid", "args", "interactive", "user", "name",
    "host", "agent", "rule", "threat", "sisguard", "alert", "stripped", "labels", "tags",
    "destination", "fim", "before", "hash", "sha256", "message", "organization",
]) | st.text(max_size=8)
TRICKY = st.sampled_from([
    "\ud800", "\udc00\ud800", "a\udfffb", "2026-11-29T10:00:00Z", "2026-13-45T99:99:99Z",
    "10.0.0.1",
    "::1", "fe80::1%eth0", "x", "big", "true", "", "9" * 30, "-1", "1e400", "NaN",
    1e308, -1e308, 2**63, -(2**63) - 1, 2**64, 0.1,
    "event", "state", "alert", "\x00", "\u202e",
])
SCALARS = (st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True)
           | st.text(max_size=20) | TRICKY)
VALUES = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=4)
                      | st.dictionaries(KEYS, inner, max_size=5), max_leaves=30)
DOCUMENTS = st.dictionaries(KEYS, VALUES, max_size=8)


def _run(documents: list[bytes]) -> None:
    pipeline = Pipeline([Validate()])
    envelopes = [pb.Envelope(seq=i + 1, dataset="fuzz", document=d)
                 for i, d in enumerate(documents)]
    outcome = pipeline.process_batch(AGENT, envelopes)
    stored = {r.seq for r in outcome.records}
    rejected = {seq for seq, _ in outcome.rejected}
    assert stored | rejected == {e.seq for e in envelopes} and not stored & rejected
    assert all(reason for _, reason in outcome.rejected)
    assert len(outcome.dead_letters) == len(outcome.rejected)
    for entry in outcome.dead_letters:     # what the dead-letter outputs write
        json.dumps(entry, ensure_ascii=False).encode("utf-8")
    for record in outcome.records:         # what the archive and Elasticsearch write
        line = json.dumps(record.document, ensure_ascii=False, allow_nan=False)
        assert json.loads(line.encode("utf-8")) == record.document   # valid JSON again
        assert record.document["agent"]["id"] == "fuzz"
        assert record.document["event"]["kind"] in ("event", "state")
        assert "rule" not in record.document and "threat" not in record.document


@FUZZ
@given(st.lists(st.binary(max_size=300), min_size=1, max_size=4))
def test_decoder_with_arbitrary_bytes(documents: list[bytes]) -> None:
    _run(documents)


@FUZZ
@given(st.lists(DOCUMENTS, min_size=1, max_size=4))
def test_decoder_with_arbitrary_documents(documents: list[dict[str, Any]]) -> None:
    _run([json.dumps(d, allow_nan=True).encode() for d in documents])


@FUZZ
@given(st.lists(st.tuples(DOCUMENTS, st.sampled_from(["utf-8", "utf-16", "utf-16-le",
                                                      "utf-16-be", "utf-32"])),
                min_size=1, max_size=4))
def test_decoder_with_documents_in_any_encoding(documents: list[tuple[dict[str, Any], str]]
                                                ) -> None:
    """json.loads(bytes) takes UTF-16/32 and surrogates in raw bytes: the decoder must not."""
    _run([json.dumps(_good(d), ensure_ascii=False, allow_nan=True).encode(codec,
                                                                          "surrogatepass")
          for d, codec in documents])


def _good(extra: dict[str, Any]) -> dict[str, Any]:
    """A valid event with ``extra`` where anything may go (unmapped)."""
    return {"@timestamp": "2026-11-29T10:00:00Z", "custom": extra,
            "event": {"kind": "event", "dataset": "sisguard.fim"}}


@FUZZ
@given(DOCUMENTS)
def test_decoder_keeps_a_good_event_with_extra_hostile_fields(extra: dict[str, Any]) -> None:
    doc = _good(extra)
    outcome = Pipeline([Validate()]).process_batch(
        AGENT, [pb.Envelope(seq=1, document=json.dumps(doc).encode())])
    leaves = list(_leaves(extra))
    has_bad_text = not all(_encodable(v) for v in leaves if isinstance(v, str))
    has_nan = any(isinstance(v, float) and not math.isfinite(v) for v in leaves)
    has_bad_name = any(not all(k.split(".")) for k in _keys(extra))
    # unmapped fields may hold anything valid: only bad text, NaN or an empty field name
    # (or empty part of a dotted one: Elasticsearch refuses them) refuses the event
    refused = has_bad_text or has_nan or has_bad_name
    assert len(outcome.records) == (0 if refused else 1), outcome.rejected


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _keys(value: Any) -> Iterator[str]:
    if isinstance(value, dict):
        for k, v in value.items():
            yield k
            yield from _keys(v)
    elif isinstance(value, list):
        for v in value:
            yield from _keys(v)


def _leaves(value: Any) -> Iterator[Any]:
    """Every scalar and every key."""
    if isinstance(value, dict):
        for k, v in value.items():
            yield k
            yield from _leaves(v)
    elif isinstance(value, list):
        for v in value:
            yield from _leaves(v)
    else:
        yield value


# config
CONFIG_KEYS = st.sampled_from([
    "limits", "max_message_bytes", "max_batch_events", "window", "max_seq_gap", "archive",
    "enabled", "elasticsearch", "url", "index_prefix", "request_timeout", "rules", "paths",
    "reload", "health", "listen", "data_dir", "log_level", "spool", "max_bytes", "shipper",
    "backoff_max", "sensors", "sensor", "fim", "collectors", "heartbeat_interval", "linger",
]) | st.text(max_size=6)
CONFIG_SCALARS = (st.none() | st.booleans() | st.integers() | st.floats()
                  | st.sampled_from(["10s", "5m", "1d", "-3s", "4MiB", "1 GiB", "fim", "x",
                                     "0.0.0.0:4443", "/tmp", "", "~", "null"])
                  | st.text(max_size=10))
CONFIG_VALUES = st.recursive(CONFIG_SCALARS, lambda inner: st.lists(inner, max_size=3)
                             | st.dictionaries(CONFIG_KEYS, inner, max_size=4), max_leaves=20)
YAML_TEXT = (st.dictionaries(CONFIG_KEYS, CONFIG_VALUES, max_size=6)
             .map(lambda d: yaml.safe_dump(d, allow_unicode=True))
             | st.text(max_size=200)
             | st.sampled_from(["a: [1, 2", "a: &x\n  b: *x\n", "? [a]\n: 1\n", "a: 1\na: 2\n",
                                "- 1\n- 2\n", "!!python/object:os.system x", "a: !!binary 'x'",
                                "limits: {window: *nope}", "\t", "a:\n\t- 1"]))


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=YAML_TEXT)
def test_config_loaders_give_a_config_or_an_error_that_says_where(
        scratch: Path, text: str) -> None:
    path = scratch / "config.yml"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    for load in (load_collector_config, load_agent_config):
        try:
            load(path, {})
        except SisguardError as e:
            assert e.location is not None and e.location.path == str(path), repr(e)
            assert e.location.line is not None, f"no line in: {e}"


# rules
RULE_KEYS = st.sampled_from([
    "title", "id", "name", "status", "logsource", "product", "service", "category",
    "detection", "selection", "condition", "level", "tags", "tests", "event", "match",
    "correlation", "type", "rules", "group-by", "timespan", "gte", "action",
    "event.action", "process.command_line|contains", "CommandLine|re", "Image|endswith",
    "TargetFilename|startswith|all", "field|base64offset|contains", "keywords",
]) | st.text(max_size=6)
RULE_SCALARS = (st.none() | st.booleans() | st.integers() | st.floats()
                | st.sampled_from(["selection", "1 of selection*", "all of them",
                                   "selection and not filter", "not", "(", "linux", "auth",
                                   "high", "event_count", "5m", "*a*a*b", "(a+)+$", "[",
                                   "sisguard_x", "2ecf4730-2fcb-4ce2-bce5-96211df5f1df"])
                | st.text(max_size=10))
RULE_VALUES = st.recursive(RULE_SCALARS, lambda inner: st.lists(inner, max_size=3)
                           | st.dictionaries(RULE_KEYS, inner, max_size=4), max_leaves=25)


def _rule_text(docs: list[dict[str, Any]]) -> str:
    return "---\n".join(yaml.safe_dump(d, allow_unicode=True) for d in docs)


RULE_FILES = (st.lists(st.dictionaries(RULE_KEYS, RULE_VALUES, max_size=7), min_size=1,
                       max_size=3).map(_rule_text)
              | st.text(max_size=200)
              | st.sampled_from(["title: x\ndetection: {sel: {a: 1}, condition: sel}\n"
                                 "logsource: {product: linux}\n",
                                 "title: x\ndetection:\n  sel:\n    a|re: '(a+)+$'\n"
                                 "  condition: sel\nlogsource: {product: linux}\n",
                                 "a: [1, 2", "--- 1\n--- [x]\n", "title: &a [*a]"]))


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=RULE_FILES)
def test_rule_loader_gives_rules_or_errors_with_file_and_line(scratch: Path, text: str) -> None:
    root = scratch / "rules"
    root.mkdir(exist_ok=True)
    path = root / "fuzz.yml"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    result = load_rules([root])
    for error in result.errors:
        assert isinstance(error, RuleLoadError)
        assert error.where.path == str(path), repr(error)
        assert error.where.line is not None, f"no line in: {error}"
