"""Rule files as YAML documents that remember positions, and errors placed in them.

pySigma reports what is wrong but not where. Each document here is a ``PositionedDict``
(common/yamlconf.py), so an error can be put on the line of the key it is about: the
pySigma error class says which key (``level``, ``logsource``, ``correlation``...), and
detection errors are pinned by re-parsing the detection items one at a time.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from sigma import exceptions as sx
from sigma.rule import SigmaDetectionItem

from collector.detection.patterns import not_linear
from collector.detection.rules import RuleLoadError
from common.errors import Location
from common.yamlconf import PositionedDict
from common.yamlconf import PositionedLoader as _Loader


@dataclass
class Document:
    path: str
    data: PositionedDict
    text: str  # the document's own text, for fingerprints

    def at(self, *keys: str) -> Location:
        """Location of the deepest of the nested keys that exists."""
        node: Any = self.data
        best = self.data.start or (1, 1)
        for key in keys:
            if not isinstance(node, PositionedDict) or key not in node:
                break
            best = node.positions.get(key, best)
            node = node[key]
        return Location(self.path, best[0], best[1])


def read_documents(path: Path, errors: list[RuleLoadError]) -> list[Document]:
    """The YAML documents of a file (``---`` separated); problems go to errors."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        errors.append(RuleLoadError(Location(str(path)), f"cannot read rule file: {e}"))
        return []
    docs: list[Document] = []
    try:
        loader = _Loader(text)
        try:
            while loader.check_node():
                start = loader.peek_event().start_mark.index  # type: ignore[no-untyped-call]
                data = loader.get_data()
                end = loader.peek_event().start_mark.index  # type: ignore[no-untyped-call]
                if data is None:
                    continue
                if not isinstance(data, PositionedDict):
                    errors.append(RuleLoadError(Location(str(path), 1, 1),
                                                "a rule document must be a mapping"))
                    continue
                docs.append(Document(str(path), data, text[start:end]))
        finally:
            loader.dispose()
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        where = (Location(str(path), mark.line + 1, mark.column + 1) if mark
                 else Location(str(path)))
        errors.append(RuleLoadError(where, f"invalid YAML: {e.problem or e}"))
    except yaml.reader.ReaderError as e:   # a character YAML does not allow: no mark
        line = text.count("\n", 0, e.position) + 1
        column = e.position - (text.rfind("\n", 0, e.position) + 1) + 1
        errors.append(RuleLoadError(Location(str(path), line, column), f"invalid YAML: {e}"))
    except yaml.YAMLError as e:
        errors.append(RuleLoadError(Location(str(path)), f"invalid YAML: {e}"))
    return docs


_KEY_OF_ERROR: dict[type[sx.SigmaError], tuple[str, ...]] = {
    sx.SigmaIdentifierError: ("id",),
    sx.SigmaTitleError: ("title",),
    sx.SigmaNameError: ("name",),
    sx.SigmaLevelError: ("level",),
    sx.SigmaStatusError: ("status",),
    sx.SigmaDateError: ("date",),
    sx.SigmaModifiedError: ("modified",),
    sx.SigmaTagError: ("tags",),
    sx.SigmaReferencesError: ("references",),
    sx.SigmaRelatedError: ("related",),
    sx.SigmaAuthorError: ("author",),
    sx.SigmaDescriptionError: ("description",),
    sx.SigmaFalsePositivesError: ("falsepositives",),
    sx.SigmaFieldsError: ("fields",),
    sx.SigmaLicenseError: ("license",),
    sx.SigmaScopeError: ("scope",),
    sx.SigmaTaxonomyError: ("taxonomy",),
    sx.SigmaLogsourceError: ("logsource",),
    sx.SigmaConditionError: ("detection", "condition"),
    sx.SigmaTimespanError: ("correlation", "timespan"),
    sx.SigmaCorrelationTypeError: ("correlation", "type"),
    sx.SigmaCorrelationConditionError: ("correlation", "condition"),
    sx.SigmaFilterConditionError: ("filter", "condition"),
    sx.SigmaFilterRuleReferenceError: ("filter", "rules"),
    sx.SigmaFilterError: ("filter",),
    sx.SigmaCorrelationRuleError: ("correlation",),
}


def _detection_items(node: Any, keys: tuple[str, ...]
                     ) -> Iterator[tuple[tuple[str, ...], str | None, Any, Any]]:
    """(key path, detection key, value, containing mapping) for every item."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield keys, key, value, node
    elif isinstance(node, list):
        if all(not isinstance(v, dict | list) for v in node):
            yield keys, None, node, None
        else:
            for item in node:
                yield from _detection_items(item, keys)
    else:
        yield keys, None, node, None


def _item_location(doc: Document, section: str, ident: str, key: str | None,
                   holder: Any) -> Location:
    if key is not None and isinstance(holder, PositionedDict) and key in holder.positions:
        line, col = holder.positions[key]
        return Location(doc.path, line, col)
    return doc.at(section, ident)


def locate_detection_key(doc: Document, field: str | None, section: str = "detection"
                         ) -> Location:
    """Where a detection key for the field (``Field|mods``) is; else the section."""
    detection = doc.data.get(section)
    if isinstance(detection, dict) and field is not None:
        for ident, definition in detection.items():
            for _keys, key, _value, holder in _detection_items(definition, ()):
                if key is not None and key.split("|")[0] == field:
                    return _item_location(doc, section, ident, key, holder)
    return doc.at(section)


def pinpoint_detection_error(doc: Document, section: str = "detection") -> Location | None:
    """Re-parse detection items one by one; the location of the first that fails."""
    detection = doc.data.get(section)
    if not isinstance(detection, dict):
        return None
    for ident, definition in detection.items():
        if ident in ("condition", "rules", "timeframe"):
            continue
        for _keys, key, value, holder in _detection_items(definition, ()):
            try:
                SigmaDetectionItem.from_mapping(key, value)
            except (sx.SigmaError, TypeError, ValueError):
                return _item_location(doc, section, ident, key, holder)
    return None


def locate_sigma_error(doc: Document, error: Exception) -> Location:
    for cls in type(error).__mro__:
        keys = _KEY_OF_ERROR.get(cls)
        if keys is not None:
            return doc.at(*keys)
    section = "filter" if "filter" in doc.data else "detection"
    return pinpoint_detection_error(doc, section) or doc.at(section)


def sigma_message(error: Exception) -> str:
    """pySigma's message without its own ' in <path>' suffix; for a regex that RE2 (which
    pySigma also checks with) refuses, why, and what the engine does (patterns.py)."""
    args = getattr(error, "args", ())
    message = str(args[0]) if args else str(error)
    if isinstance(error, sx.SigmaRegularExpressionError):
        prefix, marker = "Regular expression '", "' is invalid: "
        if message.startswith(prefix) and marker in message:
            source, _, why = message[len(prefix):].rpartition(marker)
            return str(not_linear(source, why.strip("b'\"")))
    return message
