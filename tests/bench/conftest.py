"""The bench scripts have no .py suffix: load them as modules by path."""

from __future__ import annotations

import importlib.machinery
import importlib.util
import sys
from types import ModuleType

from tests.harness import REPO


def load_script(name: str) -> ModuleType:
    path = REPO / "bench" / name
    loader = importlib.machinery.SourceFileLoader(f"bench_{name.replace('-', '_')}", str(path))
    spec = importlib.util.spec_from_loader(loader.name, loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[loader.name] = module   # dataclasses look their module up
    loader.exec_module(module)
    return module
