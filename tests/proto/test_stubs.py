"""The committed stubs are what the .proto generates today."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

from tests.harness import REPO


def test_generated_stubs_are_not_stale(tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location("generate", REPO / "proto" / "generate.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.generate(tmp_path)
    generated = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*_pb2*.py*"))
    assert generated, "protoc generated nothing"
    stale = [str(p) for p in generated
             if (REPO / "proto" / p).read_bytes() != (tmp_path / p).read_bytes()]
    assert not stale, (f"stale stubs: {stale}; run: {sys.executable} proto/generate.py")
