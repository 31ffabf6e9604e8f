"""Elasticsearch secrets: file, value, environment; never in a repr."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from collector.config import ElasticsearchConfig, load_config
from collector.credentials import (
    API_KEY_ENV,
    PASSWORD_ENV,
    CredentialError,
    read_secret_file,
    resolve_elasticsearch,
)


def _secret(tmp_path: Path, name: str, text: str, mode: int = 0o600) -> Path:
    path = tmp_path / name
    path.write_text(text)
    path.chmod(mode)
    return path


def test_a_file_wins_over_a_value_and_a_value_over_the_environment(tmp_path: Path) -> None:
    env = {API_KEY_ENV: "from-env", PASSWORD_ENV: "pw-env"}
    key_file = _secret(tmp_path, "key", "from-file\n")
    assert resolve_elasticsearch(ElasticsearchConfig(), env).api_key == "from-env"
    assert resolve_elasticsearch(ElasticsearchConfig(api_key="inline"), env).api_key == "inline"
    both = ElasticsearchConfig(api_key="inline", api_key_file=key_file)
    assert resolve_elasticsearch(both, env).api_key == "from-file"
    resolved = resolve_elasticsearch(ElasticsearchConfig(username="u"), env)
    assert resolved.password == "pw-env"
    assert resolve_elasticsearch(ElasticsearchConfig(), {}).api_key is None


def test_secrets_are_not_in_the_config_repr(tmp_path: Path) -> None:
    config = load_config(None, {"data_dir": str(tmp_path), "elasticsearch": {
        "api_key": "s3cr3t-key", "password": "s3cr3t-pw", "username": "elastic"}})
    assert config.elasticsearch.api_key == "s3cr3t-key"
    text = repr(config)
    assert "s3cr3t" not in text and "elastic" in text


def test_config_file_may_name_secret_files(tmp_path: Path) -> None:
    key_file = _secret(tmp_path, "key", "k-from-file")
    yml = tmp_path / "c.yml"
    yml.write_text(f"data_dir: {tmp_path}\nelasticsearch:\n  api_key_file: {key_file}\n")
    config = load_config(yml, {})
    assert resolve_elasticsearch(config.elasticsearch, {}).api_key == "k-from-file"


@pytest.mark.parametrize(("content", "error"), [
    ("", "expected one line"),
    ("two\nlines\n", "expected one line"),
    ("x" * (64 * 1024 + 1), "over 65536 bytes"),
])
def test_bad_secret_files_are_refused_with_their_path(
        tmp_path: Path, content: str, error: str) -> None:
    path = _secret(tmp_path, "s", content)
    with pytest.raises(CredentialError, match=error) as e:
        read_secret_file(path, what="elasticsearch API key")
    assert str(path) in str(e.value)


def test_a_secret_file_must_be_a_regular_file(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)   # a FIFO would block a plain open(): opened non-blocking, refused
    with pytest.raises(CredentialError, match="not a regular file"):
        read_secret_file(fifo, what="k")
    with pytest.raises(CredentialError, match="No such file"):
        read_secret_file(tmp_path / "missing", what="k")


def test_a_secret_file_others_can_read_is_used_with_a_warning(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = _secret(tmp_path, "s", "value\n", mode=0o644)
    assert read_secret_file(path, what="k") == "value"
    messages = [r.getMessage() for r in caplog.records]
    assert any("readable by others" in m for m in messages)
    assert not any("value" in str(getattr(r, "fields", "")) for r in caplog.records)
