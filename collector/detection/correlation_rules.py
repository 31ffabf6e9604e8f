"""Sigma correlation rules: from pySigma's ``SigmaCorrelationRule`` to ours, and linking.

Linking resolves each correlation's references (rule ids or names, possibly other
correlations: chains), turns the group-by fields (and aliases) into ECS paths per
referenced rule (``agent.id`` first, whatever the rule says: a correlation groups within
the sender's identity, so an agent enrolled elsewhere as ``hostA`` never adds to this
agency's ``hostA``), and applies ``generate``: with ``generate: false`` (the default) the
referenced detection rules feed the correlation but raise no alerts of their own. A
correlation always raises its own alerts, also when a chained correlation uses it (a brute
force is worth an alert even when no login follows it).
"""

from __future__ import annotations

from collections.abc import Mapping

from sigma.correlations import (
    SigmaCorrelationCondition,
    SigmaCorrelationRule,
    SigmaCorrelationType,
)

from collector.detection.documents import Document
from collector.detection.fieldmap import UnknownFieldError, resolve_field
from collector.detection.rules import (
    IDENTITY_PATH,
    CorrelationRule,
    CorrelationType,
    DetectionRule,
    Rule,
    RuleLoadError,
    RuleMeta,
    TestCase,
)

_TYPES = {
    SigmaCorrelationType.EVENT_COUNT: CorrelationType.EVENT_COUNT,
    SigmaCorrelationType.VALUE_COUNT: CorrelationType.VALUE_COUNT,
    SigmaCorrelationType.TEMPORAL: CorrelationType.TEMPORAL,
    SigmaCorrelationType.TEMPORAL_ORDERED: CorrelationType.TEMPORAL_ORDERED,
}


def build_correlation(sigma: SigmaCorrelationRule, doc: Document, meta: RuleMeta,
                      fingerprint: str, tests: tuple[TestCase, ...],
                      errors: list[RuleLoadError]) -> CorrelationRule | None:
    kind = _TYPES.get(sigma.type)
    if kind is None:
        errors.append(RuleLoadError(doc.at("correlation", "type"),
                                    f"unsupported construct 'correlation type "
                                    f"{sigma.type.name.lower()}'"))
        return None
    condition = sigma.condition
    if not isinstance(condition, SigmaCorrelationCondition):
        errors.append(RuleLoadError(doc.at("correlation", "condition"),
                                    "unsupported construct 'extended correlation condition'"))
        return None
    op = condition.op.name.lower()
    if op == "neq":
        errors.append(RuleLoadError(doc.at("correlation", "condition"),
                                    "unsupported construct 'neq correlation condition'"))
        return None
    fieldref = condition.fieldref
    if isinstance(fieldref, list):
        if len(fieldref) != 1:
            errors.append(RuleLoadError(doc.at("correlation", "condition"),
                                        "unsupported construct 'several condition fields'"))
            return None
        fieldref = fieldref[0]
    aliases = {alias.alias: {ref.reference: name for ref, name in alias.mapping.items()}
               for alias in sigma.aliases}
    return CorrelationRule(
        meta=meta, location=doc.at(), type=kind,
        references=tuple(r.reference for r in sigma.rules or ()),
        group_by=tuple(sigma.group_by or ()), timespan=float(sigma.timespan.seconds),
        op=op, count=float(condition.count), value_field=fieldref, aliases=aliases,
        fingerprint=fingerprint, generate=sigma.generate, tests=tests)


def _index(rules: list[Rule]) -> dict[str, Rule]:
    index: dict[str, Rule] = {}
    for rule in rules:
        index[rule.meta.id] = rule
        if rule.meta.name:
            index[rule.meta.name] = rule
    return index


def _base_mapping(rule: Rule, index: Mapping[str, Rule], depth: int = 0) -> Mapping[str, str]:
    if isinstance(rule, DetectionRule) or depth > 20:
        return rule.mapping if isinstance(rule, DetectionRule) else {}
    for ref in rule.references:
        inner = index.get(ref)
        if inner is not None:
            return _base_mapping(inner, index, depth + 1)
    return {}


def _link_one(corr: CorrelationRule, index: Mapping[str, Rule],
              errors: list[RuleLoadError]) -> bool:
    for ref in corr.references:
        target = index.get(ref)
        if target is None:
            errors.append(RuleLoadError(corr.location,
                                        f"correlation '{corr.meta.title}' refers to unknown "
                                        f"rule '{ref}'"))
            return False
        if target is corr:
            errors.append(RuleLoadError(corr.location, "a correlation cannot refer to itself"))
            return False
        mapping = _base_mapping(target, index)
        names = [corr.aliases.get(g, {}).get(ref, g) for g in corr.group_by]
        try:
            paths = [resolve_field(n, mapping) for n in names]
            corr.group_paths[ref] = (IDENTITY_PATH,
                                     *(p for p in paths if p != IDENTITY_PATH))
            if corr.value_field is not None:
                value_name = corr.aliases.get(corr.value_field, {}).get(ref, corr.value_field)
                corr.value_paths[ref] = resolve_field(value_name, mapping)
        except UnknownFieldError as e:
            errors.append(RuleLoadError(corr.location, f"correlation field: {e}"))
            return False
    return True


def _has_cycle(corr: CorrelationRule, index: Mapping[str, Rule]) -> bool:
    seen: set[int] = set()
    stack: list[Rule] = [corr]
    while stack:
        rule = stack.pop()
        if not isinstance(rule, CorrelationRule):
            continue
        for ref in rule.references:
            target = index.get(ref)
            if target is corr:
                return True
            if target is not None and id(target) not in seen:
                seen.add(id(target))
                stack.append(target)
    return False


def link_correlations(rules: list[Rule], errors: list[RuleLoadError]) -> list[Rule]:
    """Resolve references; drop correlations that cannot work (reporting why)."""
    current = list(rules)
    while True:
        index = _index(current)
        broken: list[CorrelationRule] = []
        for rule in current:
            if not isinstance(rule, CorrelationRule):
                continue
            rule.group_paths.clear()
            rule.value_paths.clear()
            if not _link_one(rule, index, errors):
                broken.append(rule)
            elif _has_cycle(rule, index):
                errors.append(RuleLoadError(rule.location,
                                            f"correlation '{rule.meta.title}' refers to itself "
                                            "through a chain"))
                broken.append(rule)
        if not broken:
            break
        current = [r for r in current if r not in broken]
    index = _index(current)
    for rule in current:
        if isinstance(rule, DetectionRule):
            rule.generate = True
    for rule in current:
        if isinstance(rule, CorrelationRule) and not rule.generate:
            for ref in rule.references:
                target = index[ref]
                if isinstance(target, DetectionRule):
                    target.generate = False
    return current
