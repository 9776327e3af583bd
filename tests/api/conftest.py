"""Fixtures for the API tests: a real uvicorn server on 127.0.0.1, tokens, a remote run.

Nothing here sends traffic anywhere but loopback: servers bind 127.0.0.1 on a free port and
every client is pointed at that address.
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from assay.api.auth import TokenStore
from assay.sdk.remote import RemoteSender, outbox_segment
from assay.sdk.writer import Writer
from assay.store.wal import WalWriter
from loopback_server import (  # tests/ is on sys.path (rootdir conftest)
    ThreadServer,
    free_port,
    wait_for,
)

ROLES = ("viewer", "researcher", "supervisor", "admin")


class ProcessServer:
    """``python -m assay.api.cli server`` in a subprocess (so it can be SIGKILLed)."""

    def __init__(self, data_dir: Path, port: int | None = None) -> None:
        self.data_dir, self.port = data_dir, port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> ProcessServer:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "assay.api.cli", "server", "--dir", str(self.data_dir),
             "--port", str(self.port), "--log-level", "warning"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=dict(os.environ))
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}")
            try:
                if httpx.get(f"{self.url}/api/health", timeout=1).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise RuntimeError("server did not start")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)


@pytest.fixture
def fast_ingest(monkeypatch: pytest.MonkeyPatch) -> None:
    """Ingest daemons started by the test ingest live segments every 0.2 s."""
    monkeypatch.setenv("ASSAY_INGEST_INTERVAL", "0.2")


@pytest.fixture
def tokens(data_dir: Path) -> dict[str, str]:
    """A token per role (named after it), plus ``researcher2`` (another researcher)."""
    store = TokenStore(data_dir)
    out = {role: store.create(role, role)[0] for role in ROLES}
    out["researcher2"] = store.create("researcher2", "researcher")[0]
    return out


@pytest.fixture
def server(data_dir: Path, tokens: dict[str, str], fast_ingest: None) -> Iterator[ThreadServer]:
    srv = ThreadServer(data_dir).start()
    yield srv
    srv.stop()


@pytest.fixture
def client(server: ThreadServer, tokens: dict[str, str]) -> Callable[[str], httpx.Client]:
    """``client(role)``: an httpx client for the server with that role's token."""
    made: list[httpx.Client] = []

    def make(role: str | None = "admin") -> httpx.Client:
        headers = {"Authorization": f"Bearer {tokens[role]}"} if role else {}
        c = httpx.Client(base_url=server.url, headers=headers, timeout=30)
        made.append(c)
        return c

    yield make  # type: ignore[misc]
    for c in made:
        c.close()


class RemoteRunHarness:
    """What ``assay.init(server=...)`` does, from the SDK's own parts: a writer thread
    fsyncing a local outbox segment, and a RemoteSender shipping it."""

    def __init__(self, local_dir: Path, url: str, token: str, project: str = "remote",
                 run_id: str | None = None, attach: int = 0, config: dict[str, Any] | None = None,
                 **sender_kw: Any) -> None:
        self.run_id = run_id or "".join(secrets.choice("abcdefghij0123456789") for _ in range(10))
        self.segment = outbox_segment(local_dir, self.run_id, attach)
        self.wal = WalWriter(self.segment)
        self.writer = Writer(self.wal, attach << 40, 0.05, {})
        self.writer.queue.append({
            "k": "run", "time": time.time(), "run_id": self.run_id, "project": project,
            "name": f"r-{self.run_id[:4]}", "group": "", "tags": ["remote"], "notes": "",
            "config": config or {"lr": 0.01}, "host": socket.gethostname(), "pid": os.getpid(),
            "attach": attach})
        self.writer.start()
        kw = {"poll": 0.05, "heartbeat": 1.0, "max_backoff": 0.5, "timeout": 5.0, **sender_kw}
        self.sender = RemoteSender(url, self.run_id, self.segment, token=token, **kw)
        self.sender.start()

    def sync(self, timeout: float = 15.0) -> bool:
        """Everything logged so far is on the local disk and acknowledged by the server."""
        return self.writer.flush(timeout) and self.sender.wait(timeout)

    def log(self, metrics: dict[str, float], step: int) -> None:
        self.writer.queue.append((step, time.time(), metrics))

    def finish(self, status: str = "completed", timeout: float = 30.0) -> bool:
        self.writer.queue.append({"k": "status", "time": time.time(), "status": status,
                                  "error": ""})
        self.writer.stop()
        self.wal.close()
        return self.sender.close(timeout)


@pytest.fixture
def mlflow_env(server: ThreadServer, tokens: dict[str, str], monkeypatch: pytest.MonkeyPatch,
               tmp_path: Path) -> Iterator[ThreadServer]:
    """The real mlflow client pointed at ``server`` as the researcher (no retries, no
    telemetry), run from ``tmp_path``: it must write no ``mlflow.db`` or ``mlruns`` of its
    own (a default tracking URI would)."""
    import contextlib

    mlflow = pytest.importorskip("mlflow")
    monkeypatch.chdir(tmp_path)  # whatever the client writes locally lands in tmp_path
    monkeypatch.setenv("MLFLOW_TRACKING_URI", server.url)
    monkeypatch.setenv("MLFLOW_REGISTRY_URI", server.url)
    monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", tokens["researcher"])
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    monkeypatch.setenv("DO_NOT_TRACK", "true")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "0")
    mlflow.set_tracking_uri(server.url)
    mlflow.set_registry_uri(server.url)
    yield server
    with contextlib.suppress(Exception):  # a run left active would be ended at exit, into
        mlflow.end_run()  # a ./mlflow.db of the default tracking URI
    mlflow.set_tracking_uri(None)
    mlflow.set_registry_uri(None)
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "mlruns").exists()


@pytest.fixture
def local_dir(tmp_path: Path) -> Path:
    """The client machine's data directory (separate from the server's)."""
    d = tmp_path / "client-data"
    d.mkdir()
    return d


@pytest.fixture
def helpers() -> Any:
    class H:
        RemoteRunHarness = RemoteRunHarness
        ThreadServer = ThreadServer
        ProcessServer = ProcessServer
        wait_for = staticmethod(wait_for)
        free_port = staticmethod(free_port)

    return H
