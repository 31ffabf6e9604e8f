"""Sigma detection for the collector: load rules, match ECS events, correlate, alert.

    result = load_rules([Path("rules")], filters=[Path("filters")])
    engine = DetectionEngine(result)
    alerts = engine.process(event)
"""

from collector.detection.engine import DetectionEngine
from collector.detection.loader import load_rules
from collector.detection.rules import LoadResult, RuleLoadError
from collector.detection.watcher import RuleWatcher

__all__ = ["DetectionEngine", "LoadResult", "RuleLoadError", "RuleWatcher", "load_rules"]
