"""Support shared by the API and dashboard tests: a real uvicorn server (``create_app(data_dir)``
served in a thread of the test process on 127.0.0.1, restartable on the same port) and a
polling wait."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ThreadServer:
    """uvicorn serving ``create_app(data_dir, **app_kwargs)`` in a daemon thread."""

    def __init__(self, data_dir: Path, port: int | None = None, **app_kwargs: Any) -> None:
        self.data_dir, self.port = data_dir, port or free_port()
        self.app_kwargs = app_kwargs
        self.url = f"http://127.0.0.1:{self.port}"
        self._server: Any = None
        self._thread: threading.Thread | None = None

    def start(self, timeout: float = 30.0) -> ThreadServer:
        import uvicorn
        from assay.api.app import create_app

        self.app = create_app(self.data_dir, **self.app_kwargs)
        cfg = uvicorn.Config(self.app, host="127.0.0.1", port=self.port, log_level="warning",
                             lifespan="on", timeout_graceful_shutdown=1)
        self._server = uvicorn.Server(cfg)
        self._thread = threading.Thread(target=self._server.run, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            self._thread.join(20)
            self._server = None


def wait_for(pred: Callable[[], Any], timeout: float = 30.0, every: float = 0.1) -> Any:
    """Poll ``pred`` until it returns something truthy (and return that); fail after
    ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        got = pred()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(every)


def raw_request(server: Any, method: str, path: str, token: str | None, body: object = None, *,
                raw: bytes | None = None, headers: dict[str, str] | None = None,
                query: dict[str, Any] | None = None) -> tuple[int, dict[str, Any]]:
    """One request to ``server`` (anything with ``.port`` on 127.0.0.1) with the path sent
    exactly as written (no client-side normalizing): ``body`` as JSON, or ``raw`` bytes.
    Returns (status, the JSON answer, or ``{"raw": bytes}`` when it is not JSON)."""
    import http.client
    import json
    import urllib.parse

    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        hdrs = {**({"Authorization": f"Bearer {token}"} if token else {}), **(headers or {})}
        data = raw
        if body is not None:
            data = json.dumps(body).encode()
            hdrs["Content-Type"] = "application/json"
        if query:
            path += "?" + urllib.parse.urlencode(query, doseq=True)
        conn.request(method, path, body=data, headers=hdrs)
        resp = conn.getresponse()
        out = resp.read()
        try:
            return resp.status, json.loads(out)
        except ValueError:
            return resp.status, {"raw": out}
    finally:
        conn.close()
