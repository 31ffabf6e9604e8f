"""Load rule files: parse with pySigma, apply filters, compile, link correlations.

``load_rules(paths, filters=...)`` returns every rule that loaded and every problem,
each with file:line:col. A rule that fails is left out; the others load.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sigma import exceptions as sx
from sigma.collection import SigmaCollection
from sigma.correlations import SigmaCorrelationRule
from sigma.exceptions import SigmaRuleLocation
from sigma.filters import SigmaFilter
from sigma.rule import SigmaRule, SigmaRuleBase

from collector.detection.conditions import ConditionCompiler, modifiers_by_value
from collector.detection.correlation_rules import build_correlation, link_correlations
from collector.detection.documents import (
    Document,
    locate_detection_key,
    locate_sigma_error,
    read_documents,
    sigma_message,
)
from collector.detection.expr import Expr, any_of, to_leaf
from collector.detection.fieldmap import field_map_for
from collector.detection.logsources import covered_keys
from collector.detection.modifiers import UnsupportedConstruct
from collector.detection.prefilter import Anchor
from collector.detection.rules import DetectionRule, LoadResult, Rule, RuleLoadError, RuleMeta
from collector.detection.testcases import parse_tests

RULE_SUFFIXES = (".yml", ".yaml")


def rule_files(paths: Iterable[Path]) -> list[tuple[Path, str]]:
    """(file, ruleset) for every rule file under the paths, sorted."""
    found: list[tuple[Path, str]] = []
    for root in paths:
        ruleset = _ruleset_name(root)
        if root.is_dir():
            found.extend((p, ruleset) for p in sorted(root.rglob("*"))
                         if p.suffix in RULE_SUFFIXES and p.is_file())
        else:
            found.append((root, ruleset))
    return found


def _ruleset_name(root: Path) -> str:
    name = root.name if root.is_dir() else root.parent.name
    return "sisguard" if name in ("rules", "") else name


@dataclass
class _Parsed:
    doc: Document
    sigma: SigmaRuleBase
    ruleset: str


def load_rules(paths: Sequence[Path], *, filters: Sequence[Path] = ()) -> LoadResult:
    errors: list[RuleLoadError] = []
    parsed: list[_Parsed] = []
    sigma_filters: list[_Parsed] = []
    for path, ruleset in rule_files(paths) + rule_files(filters):
        for doc in read_documents(path, errors):
            item = _parse(doc, ruleset, errors)
            if item is None:
                continue
            (sigma_filters if isinstance(item.sigma, SigmaFilter) else parsed).append(item)
    for flt in sigma_filters:
        _apply_filter(flt, parsed, errors)
    rules: list[Rule] = []
    for item in parsed:
        rule = _compile(item, errors)
        if rule is not None:
            rules.append(rule)
    rules = link_correlations(rules, errors)
    return LoadResult(rules=rules, errors=errors)


_LEGACY = re.compile(
    r"^\s*(?P<sel>.+?)\s*\|\s*count\(\s*(?P<field>[\w.]*)\s*\)"
    r"(?:\s+by\s+(?P<by>[\w.,\s]+?))?\s*(?P<op>[<>=]+)\s*(?P<n>\d+)\s*$")
_OPS = {">": "gt", ">=": "gte", "<": "lt", "<=": "lte", "=": "eq", "==": "eq"}


def _legacy_aggregation(doc: Document) -> RuleLoadError | None:
    detection = doc.data.get("detection")
    if not isinstance(detection, dict):
        return None
    conditions = detection.get("condition")
    conditions = conditions if isinstance(conditions, list) else [conditions]
    piped = [c for c in conditions if isinstance(c, str) and "|" in c]
    timeframe = detection.get("timeframe")
    if not piped and timeframe is None:
        return None
    match = _LEGACY.match(piped[0]) if piped else None
    rule_name = doc.data.get("name") or doc.data.get("id") or "<this rule's name or id>"
    field = match.group("field") if match else ""
    by = [b.strip() for b in match.group("by").split(",")] if match and match.group("by") else []
    op = _OPS.get(match.group("op"), "gte") if match else "gte"
    count = match.group("n") if match else "1"
    lines = [
        "title: <title>", "correlation:",
        f"  type: {'value_count' if field else 'event_count'}",
        f"  rules: [{rule_name}]",
    ]
    if by:
        lines.append(f"  group-by: [{', '.join(by)}]")
    lines.append(f"  timespan: {timeframe or '1m'}")
    cond = f"{{{op}: {count}" + (f", field: {field}" if field else "") + "}"
    lines.append(f"  condition: {cond}")
    where = doc.at("detection", "condition" if piped else "timeframe")
    construct = "'| count() by' aggregation" if piped else "'timeframe'"
    return RuleLoadError(
        where,
        f"unsupported construct {construct}: legacy Sigma aggregations are replaced by "
        "correlation rules; drop it from the condition (and 'timeframe' from detection) "
        "and add a correlation document, e.g.:\n    " + "\n    ".join(lines))


def _parse(doc: Document, ruleset: str, errors: list[RuleLoadError]) -> _Parsed | None:
    data: dict[str, Any] = dict(doc.data)
    data.pop("tests", None)
    if "action" in data:
        errors.append(RuleLoadError(doc.at("action"),
                                    "unsupported construct 'action' (global/reset/repeat "
                                    "documents): write each rule out in full"))
        return None
    legacy = _legacy_aggregation(doc)
    if legacy is not None:
        errors.append(legacy)
        return None
    source = SigmaRuleLocation(Path(doc.path))
    cls: type[SigmaRuleBase]
    if "correlation" in data:
        cls = SigmaCorrelationRule
    elif "filter" in data:
        cls = SigmaFilter
    else:
        cls = SigmaRule
    try:
        sigma = cls.from_dict(data, collect_errors=True, source=source)
    except (sx.SigmaError, ValueError, TypeError, KeyError, AttributeError) as e:
        errors.append(RuleLoadError(locate_sigma_error(doc, e), sigma_message(e)))
        return None
    if sigma.errors:
        errors.extend(RuleLoadError(locate_sigma_error(doc, e), sigma_message(e))
                      for e in sigma.errors)
        return None
    return _Parsed(doc, sigma, ruleset)


def meta_of(sigma: SigmaRuleBase, doc: Document, ruleset: str) -> RuleMeta:
    rule_id = str(sigma.id) if sigma.id else (sigma.name or f"{doc.path}:{sigma.title}")
    version = doc.data.get("version")
    if version is None:
        changed = sigma.modified or sigma.date
        version = changed.isoformat() if changed else None
    return RuleMeta(
        id=rule_id, title=sigma.title, name=sigma.name,
        description=sigma.description or "",
        references=tuple(sigma.references or ()),
        level=sigma.level.name.lower() if sigma.level else None,
        tags=tuple(str(t) for t in sigma.tags or ()),
        ruleset=ruleset, version=None if version is None else str(version))


def fingerprint(doc: Document) -> str:
    return hashlib.sha256(doc.text.encode()).hexdigest()


def _apply_filter(flt: _Parsed, parsed: list[_Parsed], errors: list[RuleLoadError]) -> None:
    sigma_filter = flt.sigma
    assert isinstance(sigma_filter, SigmaFilter)
    rules = sigma_filter.filter.rules
    if isinstance(rules, list):
        known = SigmaCollection([p.sigma for p in parsed if isinstance(p.sigma, SigmaRule)],
                                resolve_references=False)
        for ref in rules:
            try:
                known[ref.reference]
            except sx.SigmaRuleNotFoundError:
                errors.append(RuleLoadError(flt.doc.at("filter", "rules"),
                                            f"filter refers to unknown rule '{ref.reference}'"))
    for item in parsed:
        if not isinstance(item.sigma, SigmaRule):
            continue
        try:
            sigma_filter.apply_on_rule(item.sigma)
        except (sx.SigmaError, ValueError) as e:
            errors.append(RuleLoadError(locate_sigma_error(flt.doc, e),
                                        f"filter cannot apply to rule '{item.sigma.title}': "
                                        f"{sigma_message(e)}"))


def _compile(item: _Parsed, errors: list[RuleLoadError]) -> Rule | None:
    doc, sigma = item.doc, item.sigma
    tests = parse_tests(doc, errors)
    if isinstance(sigma, SigmaCorrelationRule):
        return build_correlation(sigma, doc, meta_of(sigma, doc, item.ruleset),
                                 fingerprint(doc), tests, errors)
    assert isinstance(sigma, SigmaRule)
    source = sigma.logsource
    keys = covered_keys(source.product, source.category, source.service)
    if not keys:
        described = ", ".join(f"{k}: {v}" for k, v in (("product", source.product),
                              ("category", source.category), ("service", source.service)) if v)
        errors.append(RuleLoadError(doc.at("logsource"),
                                    f"unsupported construct 'logsource' ({described}): no "
                                    "sisguard event satisfies it"))
        return None
    mapping = field_map_for(source.category, source.service)
    exprs: list[Expr] = []
    compiler = ConditionCompiler(mapping, modifiers_by_value(sigma.detection))
    anchor: Anchor | None = None
    for condition in sigma.detection.parsed_condition:
        try:
            tree = condition.parsed
        except sx.SigmaError as e:
            errors.append(RuleLoadError(doc.at("detection", "condition"), sigma_message(e)))
            return None
        try:
            exprs.append(compiler.expr(tree))
            if len(sigma.detection.parsed_condition) == 1:
                anchor = compiler.anchor(tree)
        except UnsupportedConstruct as e:
            where = (locate_detection_key(doc, e.field) if e.field
                     else doc.at("detection", "condition"))
            errors.append(RuleLoadError(where, f"unsupported construct '{e.construct}': "
                                               f"{e.reason}"))
            return None
    expression = any_of(exprs)
    return DetectionRule(
        meta=meta_of(sigma, doc, item.ruleset), location=doc.at(),
        keys=tuple(keys), match=to_leaf(expression), mapping=mapping,
        fingerprint=fingerprint(doc), tests=tests, anchor=anchor, condition=expression)
