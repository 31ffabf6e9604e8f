"""The day a document is filed under: the day the collector took it in (UTC).

``@timestamp`` is whatever the agent says, so it must not choose an index or a file: an
agent dating its events 2099, 2098, ... would create an index (and its shards) per day
until the cluster refuses to create more, for everyone. ``event.ingested`` is the
collector's own clock (set at ingest; alerts carry their event's), so the days filed
under are the days the collector ran. A document without it is filed under today.
"""

from __future__ import annotations

import datetime as dt
import time
from typing import Any


def _is_day(text: str) -> bool:
    if not (len(text) == 10 and text.isascii() and text[4] == "-" and text[7] == "-"):
        return False
    try:
        dt.date(int(text[:4]), int(text[5:7]), int(text[8:]))
    except ValueError:
        return False
    return True


def ingestion_day(document: dict[str, Any]) -> str:
    """``YYYY-MM-DD`` of the document's ``event.ingested``, or of today (UTC)."""
    meta = document.get("event")
    ingested = meta.get("ingested") if isinstance(meta, dict) else None
    if isinstance(ingested, str) and _is_day(ingested[:10]):
        return ingested[:10]
    return time.strftime("%Y-%m-%d", time.gmtime())
