"""Server-Sent Events as the stream tests read them: one parser for every test."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterable, Iterator
from typing import Any

import httpx


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


class SSEReader(threading.Thread):
    """One stream connection read in the background: every event is kept in ``events``
    (stamped with its arrival time, ``at``) and passed to :meth:`handle`, under ``lock``."""

    def __init__(self, url: str, token: str, params: dict[str, Any],
                 last_event_id: str | None = None) -> None:
        super().__init__(daemon=True)
        self.url, self.params = url, params
        self.headers = {"Authorization": f"Bearer {token}"}
        if last_event_id:
            self.headers["Last-Event-ID"] = last_event_id
        self.events: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.status: int | None = None

    def run(self) -> None:
        try:
            self._read()
        except httpx.HTTPError:
            pass  # the server closing the connection at teardown ends the reader

    def _read(self) -> None:
        with httpx.Client(timeout=httpx.Timeout(5.0, read=None)) as c, \
                c.stream("GET", f"{self.url}/api/stream", params=self.params,
                         headers=self.headers) as resp:
            self.status = resp.status_code
            for ev in sse_events(resp.iter_lines()):
                if self.stop.is_set():
                    return
                ev["at"] = time.monotonic()
                with self.lock:
                    self.events.append(ev)
                    self.handle(ev)

    def handle(self, ev: dict[str, Any]) -> None:
        """What a client does with an event (nothing here: the events are kept)."""
