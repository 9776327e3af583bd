"""``create_app``: the assay server (REST under ``/api``, MLflow protocol, live stream)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator
from pathlib import Path

from fastapi import FastAPI
from starlette.concurrency import run_in_threadpool

from .. import __version__
from . import (
    admin,
    agent_store,
    agents,
    artifact_aliases,
    artifacts,
    blobs,
    dashboard,
    fleet,
    graph,
    mlflow,
    mlflow_artifacts,
    records,
    runs,
    stream,
)
from .audit import AuditTrail
from .auth import TokenStore
from .http import InternalErrorsAsJSON, SafeJSONResponse, TooLargeAsJSON, install_error_handlers
from .ingest import RemoteIngest
from .mlflow_state import MlflowState
from .query import RunsIndex
from .store_ext import ServerStore

__all__ = ["DEFAULT_MAX_BODY", "PUBLIC_PATHS", "create_app"]

log = logging.getLogger("assay.api")

#: The only routes that answer without a token.
PUBLIC_PATHS = frozenset({"/api/health", "/openapi.json", "/docs", "/docs/oauth2-redirect",
                          "/redoc"}) | dashboard.PUBLIC_PATHS
DEFAULT_MAX_BODY = 1 << 20


def create_app(data_dir: str | os.PathLike[str], *, max_body_bytes: int = DEFAULT_MAX_BODY,
               stale_after: float = 600.0, idle_close: float = 30.0,
               start_daemon: bool = True, sweep_interval: float = 2.0,
               stream_poll: float = 0.5) -> FastAPI:
    """Build the server for one data directory.

    Args:
        data_dir: the data directory (created if missing).
        max_body_bytes: request body limit of every route except remote logging's record
            batches (64 MiB) and MLflow's (16 MiB); larger bodies get a 413.
        stale_after: seconds of silence after which an unfinished remote run's client is
            given up (recovery then marks the run crashed; a returning client still finishes
            it). Clients send a heartbeat every 30 s while idle.
        idle_close: seconds after which an idle finished run's segment is closed.
        start_daemon: start the directory's ingest daemon (tests of routes alone may skip it).
        sweep_interval: seconds between housekeeping passes (idle segments, audit counters).
        stream_poll: seconds between the live stream's checks for changed runs.

    The app serves one data directory from one process: startup takes
    ``<dir>/remote/server.lock`` (a second server on the same directory fails to start).
    """
    root = Path(data_dir).expanduser().resolve()
    root.mkdir(parents=True, exist_ok=True)
    store = ServerStore(root)
    audit = AuditTrail(root)
    remote = RemoteIngest(root, store, audit, stale_after=stale_after, idle_close=idle_close,
                          start_daemon=start_daemon)
    index = RunsIndex(store)
    hub = stream.StreamHub(index, store, poll=stream_poll)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await run_in_threadpool(remote.start)

        async def warm() -> None:  # parse the runs table before the first query needs it
            with contextlib.suppress(Exception):
                await run_in_threadpool(index.refresh)

        warmer = asyncio.get_running_loop().create_task(warm())

        async def sweeper() -> None:
            while True:
                await asyncio.sleep(sweep_interval)
                try:
                    await run_in_threadpool(remote.sweep)
                except Exception:
                    log.exception("housekeeping pass failed; retrying")

        task = asyncio.get_running_loop().create_task(sweeper())
        try:
            yield
        finally:
            warmer.cancel()
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            await hub.stop()
            await run_in_threadpool(remote.stop)

    app = FastAPI(
        title="assay", version=__version__, lifespan=lifespan,
        default_response_class=SafeJSONResponse,
        description="Experiment tracking and research agents. Every route except "
                    "`/api/health` needs `Authorization: Bearer <token>` "
                    "(`assay token create NAME --role viewer|researcher|supervisor|admin`).",
    )
    app.state.data_dir = root
    app.state.store = store
    app.state.tokens = TokenStore(root)
    app.state.audit = audit
    app.state.remote = remote
    app.state.index = index
    app.state.hub = hub
    app.state.mlflow = MlflowState(root)
    install_error_handlers(app)
    app.add_middleware(TooLargeAsJSON)
    app.add_middleware(InternalErrorsAsJSON)
    # Limits go on the routers, not the app: then a 413 passes through the error handlers.
    for r in (admin.health_router, admin.router, runs.router, records.router, stream.router,
              agents.router, graph.router, artifacts.router, artifact_aliases.router,
              blobs.router, fleet.router, dashboard.router):
        app.include_router(r, max_body_size=max_body_bytes)
    # An agent's row carries its whole state (every trial's config and curve): 16 MiB.
    app.include_router(agent_store.router, max_body_size=max(max_body_bytes, 16 << 20))
    app.include_router(mlflow.router, prefix=mlflow.PREFIXES[0], max_body_size=16 << 20)
    app.include_router(mlflow.router, prefix=mlflow.PREFIXES[1], max_body_size=16 << 20,
                       include_in_schema=False)
    for i, prefix in enumerate(mlflow_artifacts.PREFIXES):  # uploads set their own limit
        app.include_router(mlflow_artifacts.router, prefix=prefix, max_body_size=max_body_bytes,
                           include_in_schema=i == 0)
    return app
