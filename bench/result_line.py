"""The RESULT and PEER lines a benchmark prints for bench/run-all (bench/README.md).

    from bench.result_line import peer, result   # with the repository on sys.path
"""

from __future__ import annotations

import shlex


def result(name: str, value: float, unit: str, **extra: str) -> None:
    """One figure: ``extra`` takes better=, peers=, target=, label= (strings)."""
    fields = " ".join(f"{k}={shlex.quote(v)}" for k, v in extra.items())
    print(f"RESULT name={name} value={value:.6g} unit={unit} {fields}".rstrip(), flush=True)


def peer(name: str, version: str) -> None:
    """A peer's version as the benchmark found it."""
    print(f"PEER name={name} version={shlex.quote(version)}", flush=True)
