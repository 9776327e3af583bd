"""Command-line functions of the server and of store upkeep: ``assay server``,
``assay token ...`` and ``assay artifact ...`` (list, download, alias, delete versions,
collect blobs).

Only ``assay server`` and ``assay token create`` may start a new data directory; the others
refuse a path that is not one (:func:`_existing`), so a typo never reads as an empty store.

The main CLI registers them (``app.add_typer(token_app, name="token")``,
``app.add_typer(artifact_app, name="artifact")`` and ``app.command("server")(server)``);
``python -m assay.api.cli`` runs them standalone.
"""

from __future__ import annotations

import getpass
import json
import math
import re
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from ..errors import AssayError

__all__ = ["artifact_app", "main", "server", "token_app"]

token_app = typer.Typer(add_completion=False, no_args_is_help=True,
                        help="Create, list and revoke API tokens (stored hashed).")
DirOpt = Annotated[Path | None, typer.Option("--dir", help="data directory (default: "
                                                           "$ASSAY_DIR or ~/.assay)")]


ServerOpt = Annotated[str | None, typer.Option(
    "--server", help="ask this assay server instead of a data directory (e.g. --server "
                     "$ASSAY_SERVER)")]
TokenOpt = Annotated[str | None, typer.Option(
    "--token", help="bearer token for --server (default $ASSAY_TOKEN)")]


def open_api(dir: Path | None, server: str | None = None, token: str | None = None, *,
             timeout: float = 30.0) -> Any:
    """The Api a command reads through: the server ``--server`` names (``timeout`` seconds
    per request), else an existing data directory. ``$ASSAY_SERVER`` alone does not send a
    command to a server: agents started with ``assay run`` live in data directories.

    Raises:
        UserInputError: --dir with --server, --token without it, or a --dir that is not a
            data directory.
    """
    from ..errors import UserInputError
    from ..sdk.api import Api, existing_data_dir

    if dir is not None and server is not None:
        raise UserInputError("pass --dir or --server, not both",
                             hint="--dir reads a data directory here; --server asks a server")
    if server is not None:
        return Api(server=server, token=token, timeout=timeout)
    if token is not None:
        raise UserInputError("--token is for --server", hint="leave --token out, or pass --server")
    return Api(existing_data_dir(dir))


def _api(dir: Path | None, server: str | None, token: str | None) -> Any:
    try:
        return open_api(dir, server, token)
    except AssayError as e:
        _fail(e)
        raise  # unreachable: _fail exits


def _root(dir: Path | None) -> Path:
    """The data directory, created if missing: for commands that set one up."""
    from ..sdk.settings import data_dir

    return data_dir(dir)


def _existing(dir: Path | None) -> Path:
    """The data directory of a command that reads or maintains it; not one: exit 2."""
    from ..sdk.api import existing_data_dir

    try:
        return existing_data_dir(dir)
    except AssayError as e:
        _fail(e)
        raise  # unreachable: _fail exits


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

    recs = [r.public() for r in TokenStore(_existing(dir)).list()]
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

    root = _existing(dir)
    try:
        rec = TokenStore(root).revoke(token_id)
        AuditTrail(root).record(f"cli:{getpass.getuser()}", "revoke_token", token_id, reason,
                                {"name": rec.name})
    except AssayError as e:
        _fail(e)
    typer.echo(f"revoked {rec.id} ({rec.name})")


artifact_app = typer.Typer(add_completion=False, no_args_is_help=True,
                           help="List, download and alias artifact versions; delete them and "
                                "reclaim the space of their blobs.")


def _bytes(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB"):
        if size < 1024:
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GiB"


def _grace(text: str) -> float:
    from ..errors import UserInputError
    from .auth import parse_duration

    if re.fullmatch(r"\s*\d+(\.\d+)?\s*", text):
        return float(text)  # plain seconds; 0 allowed
    secs = parse_duration(text)
    if secs is None or not math.isfinite(secs):
        raise UserInputError(f"invalid grace period {text!r}", hint="e.g. 1h, 30m, 90s or 0")
    return secs


@artifact_app.command("list")
def artifact_list(
    name: Annotated[str | None, typer.Option("--name", "-n")] = None,
    deleted: Annotated[bool, typer.Option("--deleted", help="include deleted versions")] = False,
    dir: DirOpt = None, server: ServerOpt = None, token: TokenOpt = None,
) -> None:
    """List artifact versions; with --deleted, deleted ones too (who, when, why; a server
    shows them to supervisors)."""
    api = _api(dir, server, token)
    try:
        df = api.artifacts(name=name, include_deleted=deleted)
    except AssayError as e:
        _fail(e)
    if df.height == 0:
        typer.echo("no artifacts" + (f" named {name!r}" if name else ""))
        return
    for r in df.iter_rows(named=True):
        line = (f"{r['name']}:v{r['version']}  {r['type']:<10} {r['files']:>6} files "
                f"{_bytes(r['size']):>10}  {','.join(r.get('aliases') or [])}")
        if r.get("deleted_at") is not None:
            when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(r["deleted_at"]))
            line += f"  DELETED {when} by {r['deleted_by']}" + (
                f": {r['delete_reason']}" if r["delete_reason"] else "")
        typer.echo(line)


@artifact_app.command("delete")
def artifact_delete(
    spec: Annotated[str, typer.Argument(help="the exact version, NAME:vN")],
    reason: Annotated[str, typer.Option("--reason", "-r", help="why (recorded in the audit "
                                                                "trail)")] = "",
    delete_aliases: Annotated[bool, typer.Option(
        "--delete-aliases", "--force",
        help="also remove the version's aliases ('latest' moves to the newest remaining "
             "version)")] = False,
    dir: DirOpt = None, server: ServerOpt = None, token: TokenOpt = None,
) -> None:
    """Delete an artifact version: it no longer resolves; its record and lineage stay.
    Its blobs are freed by `assay artifact gc` (on a server, by its operator)."""
    api = _api(dir, server, token)
    try:
        av = api.delete_artifact(spec, reason=reason, delete_aliases=delete_aliases,
                                 actor=f"cli:{getpass.getuser()}")
    except AssayError as e:
        _fail(e)
    gone = f" (aliases removed: {', '.join(av.aliases)})" if av.aliases else ""
    typer.echo(f"deleted {av.id}{gone}; run `assay artifact gc` to free its blobs")


@artifact_app.command("get")
def artifact_get(
    spec: Annotated[str, typer.Argument(help="NAME, NAME:vN or NAME:ALIAS (default: latest)")],
    out: Annotated[Path | None, typer.Option(
        "--out", "-o", help="a new or empty folder to put the files in (default: assay's "
                            "cache, <data dir>/artifacts/NAME/vN)")] = None,
    dir: DirOpt = None, server: ServerOpt = None, token: TokenOpt = None,
) -> None:
    """Download an artifact version, checking every file against its digest.

    Prints the path: the folder, or the file of a single-file version. Files are read-only.
    A folder given with --out that holds anything else is refused, never overwritten.
    From a server (--server), the cache is this machine's data directory."""
    api = _api(dir, server, token)
    try:
        art = api.artifact(spec)
        path = art.download(out)
    except AssayError as e:
        _fail(e)
    typer.echo(f"{art.name}:v{art.version} ({len(art.files())} file(s), {_bytes(art.size)}, "
               f"verified) -> {path}", err=True)
    sys.stdout.write(f"{path}\n")


@artifact_app.command("alias")
def artifact_alias(
    spec: Annotated[str, typer.Argument(help="the version: NAME:vN (or NAME:ALIAS for the "
                                             "version another alias names)")],
    alias: Annotated[str, typer.Argument(help="the alias to point at it, e.g. prod")],
    reason: Annotated[str, typer.Option("--reason", "-r", help="why (recorded in the audit "
                                                                "trail)")] = "",
    dir: DirOpt = None, server: ServerOpt = None, token: TokenOpt = None,
) -> None:
    """Point an alias at a version, moving it from the version it named (audited).

    'latest' is managed by assay (it names the newest version) and cannot be set by hand."""
    api = _api(dir, server, token)
    try:
        before = api.artifacts(name=spec.partition(":")[0])
        av = api.set_alias(spec, alias, reason=reason, actor=f"cli:{getpass.getuser()}")
    except AssayError as e:
        _fail(e)
    was = [f"v{r['version']}" for r in before.iter_rows(named=True)
           if alias in (r.get("aliases") or [])]
    moved = f" (was {was[0]})" if was and was[0] != f"v{av.version}" else (
        " (unchanged)" if was else "")
    typer.echo(f"{av.name}:{alias} -> v{av.version}{moved}")


@artifact_app.command("unalias")
def artifact_unalias(
    name: Annotated[str, typer.Argument(help="the artifact's name")],
    alias: Annotated[str, typer.Argument(help="the alias to remove, e.g. prod")],
    reason: Annotated[str, typer.Option("--reason", "-r", help="why (recorded in the audit "
                                                                "trail)")] = "",
    dir: DirOpt = None, server: ServerOpt = None, token: TokenOpt = None,
) -> None:
    """Remove an alias; the version it named stays (audited). 'latest' cannot be removed."""
    api = _api(dir, server, token)
    try:
        av = api.remove_alias(name, alias, reason=reason, actor=f"cli:{getpass.getuser()}")
    except AssayError as e:
        _fail(e)
    typer.echo(f"removed {name}:{alias} (it named v{av.version})")


@artifact_app.command("gc")
def artifact_gc(
    dry_run: Annotated[bool, typer.Option("--dry-run", help="report only; delete "
                                                            "nothing")] = False,
    grace: Annotated[str, typer.Option(help="keep blobs written or reused within this "
                                            "period (1h, 30m, 90s, or seconds)")] = "1h",
    as_json: Annotated[bool, typer.Option("--json", help="print the report as JSON")] = False,
    dir: DirOpt = None,
) -> None:
    """Delete blobs that no live artifact version or run references (mark and sweep)."""
    from ..sdk.api import Api

    try:
        rep = Api(_existing(dir)).gc(grace=_grace(grace), dry_run=dry_run,
                                 actor=f"cli:{getpass.getuser()}")
    except AssayError as e:
        _fail(e)
    if as_json:
        sys.stdout.write(json.dumps(rep.to_dict(), indent=2) + "\n")
        return
    verb = "would delete" if dry_run else "deleted"
    typer.echo(f"{verb} {rep.swept} blob(s), {_bytes(rep.swept_bytes)}"
               + (f", and {rep.partials} partial upload(s) or download(s), "
                  f"{_bytes(rep.partial_bytes)}" if rep.partials else ""))
    typer.echo(f"kept {rep.referenced} referenced blob(s) and {rep.young} younger than the "
               f"grace period ({_bytes(rep.young_bytes)}); {rep.blobs} blob(s) scanned")


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
main.add_typer(artifact_app, name="artifact")
main.command("server")(server)

if __name__ == "__main__":
    main()
