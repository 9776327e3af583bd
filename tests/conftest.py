"""Shared fixtures: every test gets its own data directory."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from chromium import CHROMIUM, CHROMIUM_ARGS

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
# Ingest daemons started by tests exit soon after their directory goes quiet.
os.environ.setdefault("ASSAY_INGESTD_IDLE", "3")


@pytest.fixture
def data_dir(tmp_path, monkeypatch):
    """A fresh data directory, also exported as ASSAY_DIR for code that reads the default."""
    d = tmp_path / "assay-data"
    d.mkdir()
    monkeypatch.setenv("ASSAY_DIR", str(d))
    return d


@pytest.fixture
def served_dir(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    """``data_dir`` served by a real ``assay server`` (uvicorn on 127.0.0.1, in a thread):
    ``server`` (a ``ThreadServer``: ``.url``, ``.port``, ``.stop()``) and a ``viewer`` and a
    ``researcher`` token."""
    from assay.api.auth import TokenStore
    from loopback_server import ThreadServer

    monkeypatch.setenv("ASSAY_INGEST_INTERVAL", "0.2")
    tokens = TokenStore(data_dir)
    made = {"viewer": tokens.create("viewer", "viewer")[0],
            "researcher": tokens.create("researcher", "researcher")[0]}
    srv = ThreadServer(data_dir).start()
    try:
        yield {"server": srv, **made}
    finally:
        srv.stop()


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    """Headless Debian Chromium through Playwright, one per session for every browser test
    (a second sync Playwright in the same thread fails while the first runs); skipped
    where Chromium is not installed."""
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} is not installed (scripts/test installs Debian's chromium)")
    sync_playwright = pytest.importorskip("playwright.sync_api").sync_playwright
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture(scope="session")
def ray_local():
    """One local Ray for the whole test session, on loopback only (see README): 2 CPUs
    and one custom resource, ``assay_slot``.

    Never `ray stop`: it would kill every Ray on the machine. The session shuts its own down.
    """
    import ray

    if not ray.is_initialized():
        # One custom resource, so trials asking for custom resources run for real.
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
                 configure_logging=False, resources={"assay_slot": 1})
    yield ray
    ray.shutdown()
