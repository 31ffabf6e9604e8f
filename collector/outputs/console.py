"""Prints each alert as one line on stdout (the demo's and an operator's live view)."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TextIO

from collector.outputs.base import Output
from collector.outputs.registry import OutputContext, register
from collector.records import Kind, Outcome, PublishResult, Record


@dataclass(frozen=True)
class ConsoleConfig:
    as_json: bool = False      # each alert as its JSON document (else one summary line)


@register("console", ConsoleConfig)
class ConsoleAlerts(Output):
    name = "console"

    def __init__(self, stream: TextIO = sys.stdout, *, as_json: bool = False,
                 name: str = "console") -> None:
        self.name = name
        self.stream = stream
        self.as_json = as_json

    @classmethod
    def from_config(cls, name: str, config: ConsoleConfig, context: OutputContext
                    ) -> ConsoleAlerts:
        return cls(as_json=config.as_json, name=name)

    def connect(self) -> None:
        return None

    def close(self) -> None:
        self.stream.flush()

    def publish(self, records: Sequence[Record]) -> PublishResult:
        for record in records:
            if record.kind is Kind.ALERT:
                self.stream.write(self.format(record) + "\n")
        self.stream.flush()
        return PublishResult([Outcome.STORED] * len(records))

    def format(self, record: Record) -> str:
        doc = record.document
        if self.as_json:
            return json.dumps(doc, ensure_ascii=False)
        rule = doc.get("rule", {})
        level = doc.get("sisguard", {}).get("alert", {}).get("level", "?")
        host = doc.get("host", {}).get("name", "?")
        what = (doc.get("file", {}).get("path") or doc.get("process", {}).get("command_line")
                or doc.get("source", {}).get("ip") or "")
        return f"ALERT [{level}] {rule.get('name', '?')} host={host} {what}".rstrip()
