"""ECS documents for FIM: ``file.*`` from a ``FileState``, ``sisguard.fim.*`` beside it.

Paths, names and link targets stay OS strings (``os.fsdecode``) everywhere in FIM so that
they can be opened; they become document text here and only here, with
``common.text.os_text`` (the same escaping as every other sensor, see docs/events.md).
"""

from __future__ import annotations

import os
from typing import Any

from agent.ecs import Document, new_event, timestamp
from agent.sensors.fim.state import FileState
from common.text import os_text

DATASET = "sisguard.fim"

# ECS event.type for each action
ECS_TYPE = {
    "created": "creation",
    "updated": "change",
    "deleted": "deletion",
    "renamed": "change",
    "attributes_modified": "change",
    "initial_scan": "info",
    "restored": "change",
    "quarantined": "deletion",
}


def path_fields(path: str) -> dict[str, Any]:
    """``file.path/name/directory/extension``: split on the OS string, each part then
    made valid text (``common.text.os_text``: invalid bytes as ``\\xHH``)."""
    name = os.path.basename(path)
    info: dict[str, Any] = {"path": os_text(path), "name": os_text(name),
                            "directory": os_text(os.path.dirname(path))}
    ext = os.path.splitext(name)[1]
    if ext and len(ext) > 1:
        info["extension"] = os_text(ext[1:].lower())
    return info


def file_fields(state: FileState) -> dict[str, Any]:
    info = path_fields(state.path)
    info.update(type=state.type, size=state.size, mode=f"{state.mode:04o}",
                uid=str(state.uid), gid=str(state.gid), inode=str(state.inode),
                mtime=timestamp(state.mtime_ns / 1e9), ctime=timestamp(state.ctime_ns / 1e9))
    if state.owner:   # already valid text (NameCache), not escaped twice
        info["owner"] = state.owner
    if state.group:
        info["group"] = state.group
    if state.hashes:
        info["hash"] = dict(state.hashes)
    if state.target_path is not None:
        info["target_path"] = os_text(state.target_path)
    return info


def before_fields(old: FileState, changed: list[str]) -> dict[str, Any]:
    """The previous values of the changed attributes, named as in ``file.*``."""
    full = file_fields(old)
    before: dict[str, Any] = {}
    for attr in changed:
        if attr == "xattrs":
            before["xattrs"] = old.xattrs
        elif attr in full:
            before[attr] = full[attr]
    if "hash" in changed and "hash" not in before and old.hashes:
        before["hash"] = dict(old.hashes)
    return before


def fim_event(action: str, *, new: FileState | None, old: FileState | None = None,
              path: str | None = None, changed: list[str] | None = None,
              old_path: str | None = None, detected_by: str = "realtime") -> Document:
    """One FIM document. ``new`` is the state after the change (None when deleted)."""
    doc = new_event(DATASET, category=["file"], type=[ECS_TYPE[action]], action=action)
    if new is not None:
        doc["file"] = file_fields(new)
    elif old is not None:
        doc["file"] = file_fields(old)   # deleted: the last known state
    else:
        doc["file"] = path_fields(path or "")
    fim: dict[str, Any] = {"detected_by": detected_by}
    if changed:
        fim["changed"] = list(changed)
    before: dict[str, Any] = {}
    if old is not None and new is not None and changed:
        before = before_fields(old, changed)
    if old_path is not None:
        before["path"] = os_text(old_path)
    if before:
        fim["before"] = before
    doc["sisguard"] = {"fim": fim}
    doc["message"] = f"{action} {doc['file'].get('path', '')}"
    return doc


def protection_event(action: str, path: str, *, outcome: str, message: str,
                     quarantine_path: str | None = None, state: FileState | None = None,
                     ) -> Document:
    """``restored`` / ``quarantined``: what protection mode did (or refused to do)."""
    doc = new_event(DATASET, category=["file"], type=[ECS_TYPE[action]], action=action,
                    outcome=outcome)
    doc["file"] = file_fields(state) if state is not None else path_fields(path)
    fim: dict[str, Any] = {"detected_by": "protection"}
    if quarantine_path is not None:
        fim["quarantine_path"] = os_text(quarantine_path)
    doc["sisguard"] = {"fim": fim}
    text = os_text(message)   # it names paths, as the OS gave them
    doc["message"] = text
    if outcome == "failure":
        doc["error"] = {"message": text}
    return doc
