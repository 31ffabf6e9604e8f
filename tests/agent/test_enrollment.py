"""Where the enrollment token comes from (agent/enrollment.py)."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest

from agent.enrollment import TOKEN_ENV, EnrollmentError, enrollment_token


def _token(*, flag: str | None = None, file: str | None = None,
           env: dict[str, str] | None = None, stdin: bytes = b"") -> tuple[str, str]:
    warn = io.StringIO()
    token = enrollment_token(flag=flag, file=file, environ=env or {},
                             stdin=io.BytesIO(stdin), warn=warn)
    return token, warn.getvalue()


def test_each_source(tmp_path: Path) -> None:
    path = tmp_path / "t"
    path.write_text("sgt_file\n")
    path.chmod(0o600)
    assert _token(file=str(path)) == ("sgt_file", "")
    assert _token(flag="-", stdin=b"sgt_stdin\n") == ("sgt_stdin", "")
    assert _token(env={TOKEN_ENV: "sgt_env"}) == ("sgt_env", "")
    token, warning = _token(flag="sgt_cmdline")
    assert token == "sgt_cmdline" and "/proc" in warning and "--token-file" in warning
    # a flag wins over the environment
    assert _token(flag="-", stdin=b"sgt_stdin", env={TOKEN_ENV: "sgt_env"})[0] == "sgt_stdin"


@pytest.mark.parametrize(("stdin", "error"), [
    (b"", "expected one token"),
    (b"two tokens\n", "expected one token"),
    (b"\xff\xfe", "not ASCII"),
    (b"x" * 5000, "more than 4096 bytes"),
])
def test_bad_tokens_are_refused_naming_the_source(stdin: bytes, error: str) -> None:
    with pytest.raises(EnrollmentError, match=error) as e:
        _token(flag="-", stdin=stdin)
    assert "stdin" in str(e.value)


def test_token_file_problems(tmp_path: Path) -> None:
    with pytest.raises(EnrollmentError, match="not both"):
        _token(flag="x", file="y")
    with pytest.raises(EnrollmentError, match="No such file"):
        _token(file=str(tmp_path / "missing"))
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(EnrollmentError, match="not a regular file"):
        _token(file=str(fifo))
    with pytest.raises(EnrollmentError, match="no enrollment token"):
        _token()
    loose = tmp_path / "loose"
    loose.write_text("sgt_x")
    loose.chmod(0o644)
    token, warning = _token(file=str(loose))
    assert token == "sgt_x" and "readable by others" in warning
