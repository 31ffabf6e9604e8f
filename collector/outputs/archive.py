"""The embedded default output: JSON lines in ``DATA_DIR/archive``, fsynced before ack.

Files: ``events-YYYY-MM-DD.jsonl`` and ``alerts-YYYY-MM-DD.jsonl`` by the day the
collector took the document in (``event.ingested``, UTC: days.py; never ``@timestamp``,
which the agent chooses); ``deadletter-YYYY-MM-DD.jsonl`` for what could not be stored.

Exactly once: a per-agent high-water mark (the highest sequence number stored) makes a
resent event a duplicate. The marks live in memory and in ``checkpoint.json`` with the
byte offset of each file up to which they are accounted for; at start the archive reads
every file from its checkpointed offset to the end, so a crash between the fsync of a
batch and the next checkpoint loses no mark. A torn last line (crash mid-write) is cut.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

from collector.config import ArchiveConfig
from collector.outputs.base import Output
from collector.outputs.days import ingestion_day
from collector.outputs.registry import OutputContext, register
from collector.records import Kind, Outcome, PublishResult, Record
from common.logs import get_logger

log = get_logger("sisguard.collector.archive")

CHECKPOINT_EVERY = 5.0  # seconds


def day_of(document: dict[str, Any]) -> str:
    return ingestion_day(document)


@register("archive", ArchiveConfig)
class JsonlArchive(Output):
    name = "archive"
    counts_duplicates = True   # exact: by the high-water marks (collector/publisher.py)
    marks_local = True         # and cheap: asked before every batch

    def __init__(self, directory: Path, *, name: str = "archive") -> None:
        self.name = name
        self.directory = directory
        self._lock = threading.Lock()
        self._files: dict[str, IO[bytes]] = {}
        self._hwm: dict[str, int] = {}
        self._offsets: dict[str, int] = {}
        self._last_checkpoint = 0.0
        self.stored = 0
        self.duplicates = 0

    @classmethod
    def from_config(cls, name: str, config: ArchiveConfig, context: OutputContext
                    ) -> JsonlArchive:
        """``archive:`` is DATA_DIR/archive; another one under ``outputs:`` keeps its
        files in DATA_DIR/outputs/<name>."""
        if name == "archive":
            return cls(context.data_dir / "archive")
        return cls(context.data_dir / "outputs" / name, name=name)

    # lifecycle
    def connect(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self._recover()

    def close(self) -> None:
        with self._lock:
            self._checkpoint()
            for f in self._files.values():
                f.close()
            self._files.clear()

    # exactly once
    def high_water_mark(self, agent_id: str) -> int:
        with self._lock:
            return self._hwm.get(agent_id, 0)

    def publish(self, records: Sequence[Record]) -> PublishResult:
        result = PublishResult()
        with self._lock:
            touched: set[str] = set()
            batch_hwm: dict[str, int] = {}
            for record in records:
                # seq 0: made by the collector itself (e.g. agent_offline), not resent
                if record.kind is Kind.EVENT and record.seq and record.seq <= max(
                    self._hwm.get(record.agent_id, 0), batch_hwm.get(record.agent_id, 0)
                ):
                    result.outcomes.append(Outcome.DUPLICATE)
                    self.duplicates += 1
                    continue
                name = f"{record.kind.value}-{day_of(record.document)}.jsonl"
                line = json.dumps(record.document, ensure_ascii=False, separators=(",", ":"))
                self._file(name).write(line.encode() + b"\n")
                touched.add(name)
                if record.kind is Kind.EVENT and record.seq:
                    batch_hwm[record.agent_id] = record.seq
                result.outcomes.append(Outcome.STORED)
            for name in touched:
                f = self._files[name]
                f.flush()
                os.fsync(f.fileno())
            for agent_id, seq in batch_hwm.items():
                self._hwm[agent_id] = max(seq, self._hwm.get(agent_id, 0))
            self.stored += result.count(Outcome.STORED)
            if time.monotonic() - self._last_checkpoint > CHECKPOINT_EVERY:
                self._checkpoint()
        return result

    def dead_letter(self, entries: Sequence[dict[str, Any]]) -> None:
        """Keep what could not be processed, with its reason (never silently dropped)."""
        if not entries:
            return
        with self._lock:
            name = f"deadletter-{time.strftime('%Y-%m-%d', time.gmtime())}.jsonl"
            f = self._file(name)
            for entry in entries:
                f.write(json.dumps(entry, ensure_ascii=False, default=str).encode() + b"\n")
            f.flush()
            os.fsync(f.fileno())

    def health(self) -> dict[str, Any]:
        return {"stored": self.stored, "duplicates": self.duplicates}

    # internals
    def _file(self, name: str) -> IO[bytes]:
        f = self._files.get(name)
        if f is None:
            f = open(self.directory / name, "ab")  # noqa: SIM115 - kept open on purpose
            self._files[name] = f
            if len(self._files) > 16:  # keep a few days open at most
                oldest = next(iter(self._files))
                self._files.pop(oldest).close()
        return f

    def _checkpoint(self) -> None:
        for f in self._files.values():
            f.flush()
        offsets = {p.name: p.stat().st_size for p in self.directory.glob("events-*.jsonl")}
        state = {"hwm": self._hwm, "offsets": offsets}
        tmp = self.directory / "checkpoint.json.tmp"
        with open(tmp, "w") as out:
            json.dump(state, out)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, self.directory / "checkpoint.json")
        self._offsets = offsets
        self._last_checkpoint = time.monotonic()

    def _recover(self) -> None:
        path = self.directory / "checkpoint.json"
        if path.exists():
            state = json.loads(path.read_text())
            self._hwm = {k: int(v) for k, v in state.get("hwm", {}).items()}
            self._offsets = {k: int(v) for k, v in state.get("offsets", {}).items()}
        scanned = 0
        for file in sorted(self.directory.glob("events-*.jsonl")):
            start = self._offsets.get(file.name, 0)
            scanned += self._scan(file, start)
        if scanned:
            log.info("archive recovered", lines_rescanned=scanned, agents=len(self._hwm))
        self._checkpoint()

    def _scan(self, file: Path, start: int) -> int:
        size = file.stat().st_size
        if size <= start:
            return 0
        count = 0
        with open(file, "rb+") as f:
            f.seek(start)
            good_end = start
            for raw in f:
                if not raw.endswith(b"\n"):
                    break  # torn last line
                good_end += len(raw)
                count += 1
                try:
                    doc = json.loads(raw)
                    agent_id = doc["agent"]["id"]
                    seq = int(doc["event"]["sequence"])
                except (ValueError, KeyError, TypeError):
                    continue
                if seq > self._hwm.get(agent_id, 0):
                    self._hwm[agent_id] = seq
            if good_end < size:
                log.warning("cut a torn line at the end of the archive", file=str(file),
                            bytes=size - good_end)
                f.truncate(good_end)
        return count
