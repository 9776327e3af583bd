"""Bearer tokens and roles.

Roles, each allowing everything the ones before it allow:

- ``viewer``: read runs, curves, the live stream;
- ``researcher``: create runs and log to their own runs (remote logging, MLflow), declare
  their own objectives with a training function (``module:function``; a command-line train
  target runs any program as the server's user, so it needs a supervisor);
- ``supervisor``: write to any run, and (with ``agents/``) override any agent or objective;
  reads the audit trail;
- ``admin``: create, list and revoke tokens; verify the audit chain.

Every route declares its role through exactly one dependency, :func:`require` (the aliases
:data:`Viewer`, :data:`Researcher`, :data:`Supervisor`, :data:`Admin`);
``tests/api/test_api_auth.py`` walks ``app.routes`` to prove no route is open by accident.

Tokens are stored hashed in ``<data dir>/auth/tokens.json`` (mode 0600). A JSON file rather
than a LanceDB table because: tokens are few and read on every request (the file is cached
and re-read only when its stat changes, so a check costs a ``stat`` and a dict lookup);
writes are rare, atomic (temporary file + rename under an ``flock``) and must not go through
the experiment graph's single-ingester write path; and it works before any LanceDB table
exists (``assay token create`` on a fresh directory). A token is ``asy_<id>_<secret>``: the
public ``id`` finds the record, and the SHA-256 of the whole token (256 bits of randomness in
the secret, so no salt or slow hash is needed) is compared in constant time.
"""

from __future__ import annotations

import fcntl
import hashlib
import hmac
import json
import os
import re
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from ..errors import NotFoundError, PermissionDeniedError, UserInputError

__all__ = [
    "Admin",
    "Principal",
    "Researcher",
    "Role",
    "Supervisor",
    "TokenRecord",
    "TokenStore",
    "Viewer",
    "parse_duration",
    "require",
]

_TOKEN_RE = re.compile(r"^asy_([a-z0-9]{10})_([A-Za-z0-9_\-]{20,128})$")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@\-]{0,63}$")
_ID_ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789"


class Role(StrEnum):
    """What a token may do; ordered viewer < researcher < supervisor < admin."""

    VIEWER = "viewer"
    RESEARCHER = "researcher"
    SUPERVISOR = "supervisor"
    ADMIN = "admin"

    @property
    def rank(self) -> int:
        return _RANKS[self]

    def allows(self, required: Role) -> bool:
        """Whether a token of this role may do what ``required`` may."""
        return self.rank >= required.rank


_RANKS = {Role.VIEWER: 0, Role.RESEARCHER: 1, Role.SUPERVISOR: 2, Role.ADMIN: 3}


@dataclass(frozen=True)
class TokenRecord:
    """A stored token: never the token itself, only its SHA-256."""

    id: str
    name: str
    role: Role
    hash: str
    created_at: float
    expires_at: float | None = None
    revoked_at: float | None = None
    created_by: str = ""

    def public(self) -> dict[str, Any]:
        """The record without its hash (what the API lists)."""
        d = asdict(self)
        d.pop("hash")
        d["role"] = str(self.role)
        d["active"] = self.active()
        return d

    def active(self, now: float | None = None) -> bool:
        now = time.time() if now is None else now
        return self.revoked_at is None and (self.expires_at is None or now < self.expires_at)


@dataclass(frozen=True)
class Principal:
    """Who is calling: the token's id, name (the audit trail's "who") and role."""

    token_id: str
    name: str
    role: Role

    def can(self, required: Role) -> bool:
        return self.role.allows(required)


def parse_duration(text: str | None) -> float | None:
    """``"30d"``, ``"12h"``, ``"45m"``, ``"90s"`` or ``"2w"`` to seconds; None/``"never"``: None."""
    if text is None or text.strip().lower() in ("", "never", "none"):
        return None
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*", text.lower())
    if not m:
        raise UserInputError(f"invalid duration {text!r}",
                             hint="use a number and a unit: 90s, 45m, 12h, 30d, 2w, or 'never'")
    secs = float(m.group(1)) * {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}[m.group(2)]
    if secs <= 0:
        raise UserInputError(f"duration {text!r} must be positive", hint="e.g. 30d")
    return secs


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class TokenStore:
    """The tokens of a data directory (``<dir>/auth/tokens.json``). Thread- and process-safe."""

    def __init__(self, data_dir: Path) -> None:
        self.dir = Path(data_dir) / "auth"
        self.path = self.dir / "tokens.json"
        self._lock_path = self.dir / "tokens.lock"
        self._mutex = threading.Lock()
        self._stat: tuple[int, int, int] | None = None
        self._records: dict[str, TokenRecord] = {}

    # -- reading --------------------------------------------------------------------------
    def _load(self) -> dict[str, TokenRecord]:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return {}
        key = (st.st_ino, st.st_mtime_ns, st.st_size)
        with self._mutex:
            if key != self._stat:
                raw = json.loads(self.path.read_text())
                self._records = {
                    r["id"]: TokenRecord(**{**r, "role": Role(r["role"])})
                    for r in raw.get("tokens", [])
                }
                self._stat = key
            return self._records

    def list(self) -> list[TokenRecord]:
        """Every token record, oldest first."""
        return sorted(self._load().values(), key=lambda r: r.created_at)

    def authenticate(self, token: str, now: float | None = None) -> Principal | None:
        """The principal of a valid token; None if unknown, revoked, expired or malformed."""
        m = _TOKEN_RE.match(token)
        if not m:
            return None
        rec = self._load().get(m.group(1))
        if rec is None or not hmac.compare_digest(_hash(token), rec.hash):
            return None
        if not rec.active(now):
            return None
        return Principal(rec.id, rec.name, rec.role)

    def why_invalid(self, token: str) -> str:
        """A message saying why a token was refused (never reveals whether an id exists)."""
        m = _TOKEN_RE.match(token)
        if not m:
            return "malformed token"
        rec = self._load().get(m.group(1))
        if rec is None or not hmac.compare_digest(_hash(token), rec.hash):
            return "unknown token"
        if rec.revoked_at is not None:
            return f"token {rec.id} was revoked"
        if rec.expires_at is not None and time.time() >= rec.expires_at:
            return f"token {rec.id} expired at {time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime(rec.expires_at))} UTC"
        return "token refused"

    # -- writing --------------------------------------------------------------------------
    def _mutate(self, fn: Callable[[dict[str, TokenRecord]], None]) -> None:
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            self._stat = None
            records = dict(self._load())
            fn(records)
            data = {"version": 1, "tokens": [
                {**asdict(r), "role": str(r.role)} for r in records.values()]}
            tmp = self.path.with_name(f".tokens.{os.getpid()}.{threading.get_ident()}.tmp")
            tfd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(tfd, "w") as f:
                json.dump(data, f, indent=1)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
            self._stat = None
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def create(self, name: str, role: Role | str, *, expires_in: float | None = None,
               created_by: str = "") -> tuple[str, TokenRecord]:
        """Make a token; returns ``(token, record)``. The token is not stored: show it once.

        Raises:
            UserInputError: invalid name, role or expiry.
        """
        if not isinstance(name, str) or not _NAME_RE.match(name):
            raise UserInputError(f"invalid token name {name!r}",
                                 hint="1-64 letters, digits, '_', '.', '@' or '-' (e.g. 'alice')")
        try:
            role = Role(role)
        except ValueError:
            raise UserInputError(f"unknown role {role!r}",
                                 hint="one of: " + ", ".join(r.value for r in Role)) from None
        if expires_in is not None and (not isinstance(expires_in, (int, float))
                                       or not 0 < expires_in < 1e10):
            raise UserInputError(f"invalid expiry {expires_in!r}", hint="seconds > 0, or none")
        tid = "".join(secrets.choice(_ID_ALPHABET) for _ in range(10))
        token = f"asy_{tid}_{secrets.token_urlsafe(32)}"
        now = time.time()
        rec = TokenRecord(id=tid, name=name, role=role, hash=_hash(token), created_at=now,
                          expires_at=None if expires_in is None else now + expires_in,
                          created_by=created_by)

        def add(records: dict[str, TokenRecord]) -> None:
            records[tid] = rec

        self._mutate(add)
        return token, rec

    def revoke(self, token_id: str) -> TokenRecord:
        """Revoke a token by id (idempotent).

        Raises:
            NotFoundError: no token has this id.
        """
        out: list[TokenRecord] = []

        def rev(records: dict[str, TokenRecord]) -> None:
            rec = records.get(token_id)
            if rec is None:
                raise NotFoundError(f"no token with id {token_id!r}",
                                    hint="list tokens with GET /api/tokens or `assay token list`")
            if rec.revoked_at is None:
                rec = replace(rec, revoked_at=time.time())
                records[token_id] = rec
            out.append(rec)

        self._mutate(rev)
        return out[0]


# -- FastAPI dependencies ---------------------------------------------------------------------
_bearer = HTTPBearer(auto_error=False, description="a token from `assay token create`")


def require(role: Role) -> Callable[..., Principal]:
    """The dependency that authenticates the caller and checks it has at least ``role``.

    The returned callable carries ``__assay_role__`` so the route audit test can read each
    route's role.
    """

    def dependency(request: Request,
                   creds: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
                   ) -> Principal:
        tokens: TokenStore = request.app.state.tokens
        hdr = {"WWW-Authenticate": "Bearer"}
        if creds is None or not creds.credentials:
            raise HTTPException(401, "missing bearer token", headers=hdr)
        who = tokens.authenticate(creds.credentials)
        if who is None:
            raise HTTPException(401, tokens.why_invalid(creds.credentials), headers=hdr)
        if not who.can(role):
            raise PermissionDeniedError(
                f"token {who.name!r} has role {who.role}, this needs {role}",
                hint=f"ask an admin for a {role} token: assay token create NAME --role {role}")
        request.state.principal = who
        return who

    dependency.__assay_role__ = role  # type: ignore[attr-defined]
    dependency.__name__ = f"require_{role}"
    return dependency


Viewer = Annotated[Principal, Depends(require(Role.VIEWER))]
Researcher = Annotated[Principal, Depends(require(Role.RESEARCHER))]
Supervisor = Annotated[Principal, Depends(require(Role.SUPERVISOR))]
Admin = Annotated[Principal, Depends(require(Role.ADMIN))]
