"""Fixtures for the dashboard tests: a real uvicorn server on 127.0.0.1, a seeded data
directory (see ``dash_support.seed``) and headless Debian Chromium driven by Playwright
(never a downloaded browser).

The server and the seeded directory are shared by the session's tests (seeding takes a few
seconds); the restart test stops it and starts it again on the same port.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from dash_support import DashServer, git_checkout, ingested, seed
from loopback_server import wait_for

SCREENSHOTS = Path(__file__).resolve().parents[1] / "artifacts" / "screenshots"


@pytest.fixture(scope="session")
def dash(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A seeded data directory, tokens per role and a running server (shared by the session:
    seeding takes seconds). ``dash["server"]`` may be replaced by a test that restarts it."""
    from assay.api.auth import TokenStore

    root = tmp_path_factory.mktemp("dash")
    data_dir = root / "data"
    data_dir.mkdir()
    info: dict[str, Any] = {}
    old = os.environ.get("ASSAY_INGEST_INTERVAL")
    os.environ["ASSAY_INGEST_INTERVAL"] = "0.2"  # the ingest daemon started now keeps it
    try:
        with git_checkout(root / "code"):  # clean: the seeded runs capture no diff
            info = seed(data_dir)
        done = (info["prep"], *info["trials"])
        wait_for(lambda: ingested(data_dir, info["live"].id, 49, done), timeout=30)
        store = TokenStore(data_dir)
        tokens = {r: store.create(r, r)[0] for r in ("viewer", "researcher", "supervisor")}
        state = {"server": DashServer(data_dir).start(), "data_dir": data_dir, "tokens": tokens,
                 **info}
        state["url"] = state["server"].url
    finally:
        if old is None:
            os.environ.pop("ASSAY_INGEST_INTERVAL", None)
        else:
            os.environ["ASSAY_INGEST_INTERVAL"] = old
    try:
        yield state
    finally:
        state["server"].stop()
        if "live" in info:
            info["live"].finish()


class Tab:
    """A page of the dashboard with its console errors recorded."""

    def __init__(self, page: Any, base: str) -> None:
        self.page, self.base = page, base
        self.errors: list[str] = []
        page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: self.errors.append(f"uncaught: {e}"))

    def unexpected(self, *allowed: str) -> list[str]:
        """Console errors other than those containing one of ``allowed`` (expected ones, such
        as the browser's own line for a deliberate 404)."""
        return [e for e in self.errors if not any(a in e for a in allowed)]

    def open(self, hash_: str = "#/") -> Any:
        self.page.goto(f"{self.base}/{hash_}")
        return self.page

    def shot(self, name: str) -> Path:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        path = SCREENSHOTS / f"{name}.png"
        self.page.screenshot(path=str(path), full_page=True)
        return path


@pytest.fixture
def tab(browser: Any, dash: dict[str, Any]) -> Callable[..., Tab]:
    """``tab(role="supervisor", theme=None)``: a fresh browser context signed in as ``role``."""
    made: list[Any] = []

    def make(role: str | None = "supervisor", theme: str | None = None,
             size: tuple[int, int] = (1440, 1000)) -> Tab:
        ctx = browser.new_context(viewport={"width": size[0], "height": size[1]},
                                  color_scheme=theme or "light")
        made.append(ctx)
        if role:
            token = dash["tokens"][role]
            ctx.add_init_script(f"sessionStorage.setItem('assay.token', {token!r});")
        return Tab(ctx.new_page(), dash["url"])

    yield make  # type: ignore[misc]
    for c in made:
        c.close()
