"""Command-line functions of the server: ``assay server`` and ``assay token ...``.

The main CLI registers them (``app.add_typer(token_app, name="token")`` and
``app.command("server")(server)``); ``python -m assay.api.cli`` runs them standalone.
"""

from __future__ import annotations

import getpass
import json
import sys
import time
from pathlib import Path
from typing import Annotated

import typer

from ..errors import AssayError

__all__ = ["main", "server", "token_app"]

token_app = typer.Typer(add_completion=False, no_args_is_help=True,
                        help="Create, list and revoke API tokens (stored hashed).")
DirOpt = Annotated[Path | None, typer.Option("--dir", help="data directory (default: "
                                                           "$ASSAY_DIR or ~/.assay)")]


def _root(dir: Path | None) -> Path:
    from ..sdk.settings import data_dir

    return data_dir(dir)


def _fail(exc: AssayError) -> None:
    typer.echo(f"error: {exc.message}", err=True)
    if exc.hint:
        typer.echo(f"hint: {exc.hint}", err=True)
    raise typer.Exit(2)


@token_app.command("create")
def token_create(
    name: Annotated[str, typer.Argument(help="who holds the token (the audit trail's 'who')")],
    role: Annotated[str, typer.Option(help="viewer | researcher | supervisor | admin")] = "viewer",
    expires: Annotated[str | None, typer.Option(help="lifetime, e.g. 30d, 12h; default never")] = None,
    reason: Annotated[str, typer.Option(help="why (recorded in the audit trail)")] = "",
    dir: DirOpt = None,
) -> None:
    """Create a token and print it once (only its SHA-256 is stored)."""
    from .audit import AuditTrail
    from .auth import TokenStore, parse_duration

    root = _root(dir)
    try:
        token, rec = TokenStore(root).create(name, role, expires_in=parse_duration(expires),
                                             created_by=f"cli:{getpass.getuser()}")
        AuditTrail(root).record(f"cli:{getpass.getuser()}", "create_token", rec.id, reason,
                                {"name": rec.name, "role": str(rec.role),
                                 "expires_at": rec.expires_at})
    except AssayError as e:
        _fail(e)
    until = "never" if rec.expires_at is None else time.strftime(
        "%Y-%m-%d %H:%M UTC", time.gmtime(rec.expires_at))
    typer.echo(f"token {rec.id} for {rec.name} ({rec.role}), expires {until}. "
               "It is shown only now:", err=True)
    sys.stdout.write(token + "\n")


@token_app.command("list")
def token_list(dir: DirOpt = None,
               as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """List tokens (id, name, role, expiry, revoked); never the tokens themselves."""
    from .auth import TokenStore

    recs = [r.public() for r in TokenStore(_root(dir)).list()]
    if as_json:
        sys.stdout.write(json.dumps(recs, indent=2) + "\n")
        return
    for r in recs:
        exp = "never" if r["expires_at"] is None else time.strftime(
            "%Y-%m-%d", time.gmtime(r["expires_at"]))
        state = "active" if r["active"] else ("revoked" if r["revoked_at"] else "expired")
        typer.echo(f"{r['id']}  {r['name']:<20} {r['role']:<10} expires {exp:<10} {state}")


@token_app.command("revoke")
def token_revoke(token_id: str, dir: DirOpt = None,
                 reason: Annotated[str, typer.Option(help="why")] = "") -> None:
    """Revoke a token by id (from `assay token list`)."""
    from .audit import AuditTrail
    from .auth import TokenStore

    root = _root(dir)
    try:
        rec = TokenStore(root).revoke(token_id)
        AuditTrail(root).record(f"cli:{getpass.getuser()}", "revoke_token", token_id, reason,
                                {"name": rec.name})
    except AssayError as e:
        _fail(e)
    typer.echo(f"revoked {rec.id} ({rec.name})")


def server(
    host: Annotated[str, typer.Option(help="address to bind (default: loopback only)")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port")] = 8000,
    dir: DirOpt = None,
    log_level: Annotated[str, typer.Option(help="uvicorn log level")] = "info",
) -> None:
    """Serve the REST API, the live stream and the MLflow protocol for a data directory."""
    import uvicorn

    from .app import create_app

    root = _root(dir)
    try:
        app = create_app(root)
    except AssayError as e:
        _fail(e)
    typer.echo(f"assay server for {root} on http://{host}:{port} (docs at /docs)", err=True)
    uvicorn.run(app, host=host, port=port, log_level=log_level, workers=1,
                timeout_graceful_shutdown=5)  # live streams would hold shutdown forever


main = typer.Typer(add_completion=False, no_args_is_help=True, help="assay server commands")
main.add_typer(token_app, name="token")
main.command("server")(server)

if __name__ == "__main__":
    main()
