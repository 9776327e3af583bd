"""Tokens, roles and the audit trail: no route is open by accident."""

from __future__ import annotations

import json
import os
import stat
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from assay.api.app import PUBLIC_PATHS, create_app
from assay.api.audit import AuditTrail
from assay.api.auth import Role, TokenStore, parse_duration
from assay.errors import NotFoundError, UserInputError
from fastapi.routing import APIRoute, iter_route_contexts
from starlette.routing import Route


def _roles(dependant: Any) -> list[Role]:
    """Every role requirement in a route's (effective) dependency tree."""
    found: list[Role] = []
    stack = list(dependant.dependencies)
    while stack:
        dep = stack.pop()
        role = getattr(dep.call, "__assay_role__", None)
        if role is not None:
            found.append(role)
        stack.extend(dep.dependencies)
    return found


def test_every_route_declares_exactly_one_role_and_only_docs_and_health_are_public(
        tmp_path: Path) -> None:
    app = create_app(tmp_path / "d", start_daemon=False)
    table: dict[tuple[str, str], Role | None] = {}
    for ctx in iter_route_contexts(app.routes):  # every effective route, prefixes applied
        path = ctx.path
        if isinstance(ctx.original_route, APIRoute):
            roles = _roles(ctx.dependant)
            for method in ctx.methods:
                if path in PUBLIC_PATHS:
                    assert roles == [], f"{path} is public but asks for {roles}"
                    table[(method, path)] = None
                else:
                    assert len(roles) == 1, f"{method} {path} declares roles {roles}"
                    table[(method, path)] = roles[0]
        else:
            assert isinstance(ctx.original_route, Route) and path in PUBLIC_PATHS, \
                f"{path} is served outside the role-checked routers"
    assert len(table) > 40
    assert table[("GET", "/api/health")] is None
    expect = {
        ("GET", "/api/runs"): Role.VIEWER,
        ("GET", "/api/runs/{run_id}/history"): Role.VIEWER,
        ("GET", "/api/stream"): Role.VIEWER,
        ("POST", "/api/runs/{run_id}/records"): Role.RESEARCHER,
        ("POST", "/api/2.0/mlflow/runs/log-batch"): Role.RESEARCHER,
        ("POST", "/ajax-api/2.0/mlflow/runs/create"): Role.RESEARCHER,
        ("POST", "/api/2.0/mlflow/runs/search"): Role.VIEWER,
        ("POST", "/api/2.0/mlflow/experiments/delete"): Role.SUPERVISOR,
        ("GET", "/api/audit"): Role.SUPERVISOR,
        ("POST", "/api/tokens"): Role.ADMIN,
        ("DELETE", "/api/tokens/{token_id}"): Role.ADMIN,
        ("GET", "/api/audit/verify"): Role.ADMIN,
    }
    for key, role in expect.items():
        assert table[key] is role, key
    assert sum(1 for r in table.values() if r is None) == 1, "only /api/health among API routes"


def test_roles_are_ordered() -> None:
    assert Role.ADMIN.allows(Role.SUPERVISOR) and Role.SUPERVISOR.allows(Role.RESEARCHER)
    assert Role.RESEARCHER.allows(Role.VIEWER) and not Role.VIEWER.allows(Role.RESEARCHER)
    assert not Role.SUPERVISOR.allows(Role.ADMIN)


def test_tokens_are_stored_hashed_in_a_private_file(tmp_path: Path) -> None:
    store = TokenStore(tmp_path)
    token, rec = store.create("alice", "researcher", expires_in=3600)
    raw = (tmp_path / "auth" / "tokens.json").read_text()
    assert token not in raw and token.split("_", 2)[2] not in raw  # the secret may hold "_"
    assert rec.hash in raw
    assert stat.S_IMODE(os.stat(tmp_path / "auth" / "tokens.json").st_mode) == 0o600
    who = store.authenticate(token)
    assert who is not None and (who.name, who.role) == ("alice", Role.RESEARCHER)
    assert store.authenticate(token[:-1] + ("A" if token[-1] != "A" else "B")) is None
    assert store.authenticate("asy_" + rec.id + "_" + "x" * 43) is None
    assert store.authenticate(token, now=time.time() + 7200) is None, "expired"
    store.revoke(rec.id)
    assert store.authenticate(token) is None
    assert "revoked" in store.why_invalid(token)
    with pytest.raises(NotFoundError):
        store.revoke("zzzzzzzzzz")
    with pytest.raises(UserInputError):
        store.create("bad name!", "viewer")
    with pytest.raises(UserInputError):
        store.create("ok", "emperor")


@pytest.mark.parametrize("text, secs", [("30d", 30 * 86400), ("12h", 43200), ("90s", 90),
                                        ("2w", 1209600), ("never", None), (None, None)])
def test_parse_duration(text, secs) -> None:
    assert parse_duration(text) == secs


def test_parse_duration_rejects_nonsense() -> None:
    with pytest.raises(UserInputError):
        parse_duration("soon")


@pytest.mark.integration
def test_missing_malformed_unknown_expired_and_revoked_tokens_get_401(server, client, tokens,
                                                                      data_dir) -> None:
    anon = httpx.Client(base_url=server.url)
    assert anon.get("/api/health").status_code == 200
    assert anon.get("/openapi.json").status_code == 200
    r = anon.get("/api/runs")
    assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
    assert r.json()["error"] == "missing bearer token" and "assay token create" in r.json()["hint"]
    for bad, why in [("nonsense", "malformed"), ("asy_abcdefghij_" + "x" * 43, "unknown")]:
        r = anon.get("/api/runs", headers={"Authorization": f"Bearer {bad}"})
        assert r.status_code == 401 and why in r.json()["error"]
    short, _ = TokenStore(data_dir).create("shortlived", "admin", expires_in=0.05)
    time.sleep(0.1)
    r = anon.get("/api/runs", headers={"Authorization": f"Bearer {short}"})
    assert r.status_code == 401 and "expired" in r.json()["error"]
    admin = client("admin")
    made = admin.post("/api/tokens", json={"name": "temp", "role": "viewer"}).json()
    assert anon.get("/api/whoami", headers={"Authorization": f"Bearer {made['token']}"}).json() \
        == {"token_id": made["id"], "name": "temp", "role": "viewer"}
    assert admin.delete(f"/api/tokens/{made['id']}").json()["active"] is False
    r = anon.get("/api/whoami", headers={"Authorization": f"Bearer {made['token']}"})
    assert r.status_code == 401 and "revoked" in r.json()["error"]


@pytest.mark.integration
def test_roles_gate_reads_writes_and_token_management(server, client) -> None:
    viewer, researcher, supervisor, admin = (client(r) for r in
                                             ("viewer", "researcher", "supervisor", "admin"))
    assert viewer.get("/api/runs").status_code == 200
    r = viewer.post("/api/runs/abcd1234/records", content=b"",
                    headers={"Content-Type": "application/x-assay-wal"})
    assert r.status_code == 403 and "needs researcher" in r.json()["error"]
    for c in (viewer, researcher, supervisor):
        assert c.get("/api/tokens").status_code == 403
        assert c.post("/api/tokens", json={"name": "x", "role": "admin"}).status_code == 403
    assert researcher.get("/api/audit").status_code == 403
    assert supervisor.get("/api/audit").status_code == 200
    listed = admin.get("/api/tokens").json()["tokens"]
    assert {t["name"] for t in listed} >= {"viewer", "researcher", "supervisor", "admin"}
    assert all("hash" not in t for t in listed)


@pytest.mark.integration
def test_writes_through_the_api_are_audited_and_the_chain_verifies(server, client,
                                                                   data_dir) -> None:
    admin = client("admin")
    admin.post("/api/tokens", json={"name": "carol", "role": "researcher", "expires_in": "30d",
                                    "reason": "joins the vision team"})
    made = admin.post("/api/tokens", json={"name": "dave", "role": "viewer"},
                      headers={"X-Assay-Reason": "intern"}).json()
    admin.delete(f"/api/tokens/{made['id']}", headers={"X-Assay-Reason": "left"})
    entries = client("supervisor").get("/api/audit").json()["entries"]
    assert [(e["actor"], e["action"], e["reason"]) for e in entries[:3]] == [
        ("admin", "revoke_token", "left"), ("admin", "create_token", "intern"),
        ("admin", "create_token", "joins the vision team")]
    assert admin.get("/api/audit/verify").json()["ok"] is True
    path = data_dir / "audit" / "audit.jsonl"
    lines = path.read_text().splitlines()
    row = json.loads(lines[1])
    row["payload_json"] = row["payload_json"].replace("intern", "intruder")
    lines[1] = json.dumps(row)
    path.write_text("\n".join(lines) + "\n")
    report = admin.get("/api/audit/verify").json()
    assert report["ok"] is False and any("content changed" in p for p in report["problems"])


def test_audit_trail_chains_across_instances(tmp_path: Path) -> None:
    a, b = AuditTrail(tmp_path), AuditTrail(tmp_path)
    first = a.record("alice", "create_token", "t1", "why")
    second = b.record("bob", "revoke_token", "t1", "because")
    assert second.prev_hash == first.hash and second.seq == 1
    a.count_metrics("alice", "run1", 5, 9, 5, 100)
    a.count_metrics("alice", "run1", 10, 12, 3, 30)
    assert a.flush_metrics() == 1
    total, rows = a.entries()
    assert total == 3 and rows[0]["action"] == "log_metrics"
    assert rows[0]["details"] == {"first_seq": 5, "last_seq": 12, "records": 8, "points": 130}
    assert a.verify() == []


def test_cli_token_create_prints_the_token_once(tmp_path: Path) -> None:
    from assay.api.cli import token_app
    from typer.testing import CliRunner

    res = CliRunner().invoke(token_app, ["create", "erin", "--role", "supervisor",
                                         "--expires", "30d", "--dir", str(tmp_path)])
    assert res.exit_code == 0, res.output
    token = res.stdout.strip().splitlines()[-1]
    who = TokenStore(tmp_path).authenticate(token)
    assert who is not None and who.role is Role.SUPERVISOR and who.name == "erin"
    listed = CliRunner().invoke(token_app, ["list", "--dir", str(tmp_path)])
    assert "erin" in listed.stdout and token not in listed.stdout
    bad = CliRunner().invoke(token_app, ["create", "x", "--role", "emperor", "--dir", str(tmp_path)])
    assert bad.exit_code == 2 and "unknown role" in bad.output


def test_an_unexpected_error_is_a_json_500_and_the_connection_stays_usable(
        server, client, monkeypatch, caplog) -> None:
    """Starlette re-raises after an app-level 500 handler answers, and uvicorn then drops
    the keep-alive connection: the client's next request on it failed too."""
    from assay.api.auth import TokenStore

    def broken(self):
        raise RuntimeError("boom")

    monkeypatch.setattr(TokenStore, "list", broken)
    admin = client("admin")
    with caplog.at_level("ERROR", logger="assay.api"):
        r = admin.get("/api/tokens")
    assert r.status_code == 500 and r.json()["error"] == "internal error: RuntimeError"
    assert "bug in assay" in r.json()["hint"] and "boom" in caplog.text
    assert admin.get("/api/whoami").status_code == 200  # the same connection
