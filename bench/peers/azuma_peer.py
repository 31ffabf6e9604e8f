"""azuma (pure-Python Sigma matcher) as a peer of bench/rules_peers: RuleSet.match_all."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from azuma import RuleSet
from peer_common import run


def load(rules_dir: str, events: list[Any]) -> Any:
    rules = RuleSet.from_dir(rules_dir)

    def evaluate(events: list[Any]) -> Iterable[tuple[int, str]]:
        for index, event in enumerate(events):
            for rule in rules.match_all(event):
                yield index, str(rule.id)
    return len(rules.root), evaluate


run(load)
