"""Server-Sent Events as the stream tests read them: one parser for every test."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from typing import Any


def sse_events(lines: Iterable[str]) -> Iterator[dict[str, Any]]:
    """``{"event", "id", "data"}`` per event of an SSE body's lines (``data`` decoded)."""
    ev: dict[str, Any] = {}
    for line in lines:
        if line.startswith("event: "):
            ev["event"] = line[7:]
        elif line.startswith("id: "):
            ev["id"] = line[4:]
        elif line.startswith("data: "):
            ev["data"] = json.loads(line[6:])
        elif line == "" and ev:
            yield ev
            ev = {}
