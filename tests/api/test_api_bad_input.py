"""Bad input gets a 4xx with ``{"error", "hint"}``, never a 5xx, and loses nothing stored."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.integration


def _is_clear_4xx(r, status: int | tuple[int, ...]) -> bool:
    statuses = (status,) if isinstance(status, int) else status
    body = r.json()
    return r.status_code in statuses and isinstance(body["error"], str) and "hint" in body


def test_malformed_json_wrong_types_and_nan_are_400(server, client) -> None:
    admin = client("admin")
    json_h = {"Content-Type": "application/json"}
    cases = [
        b'{"name": "x", "role": ',                   # truncated
        b'{"name": NaN, "role": "viewer"}',          # bare NaN
        b'{"name": "x", "role": "viewer", "expires_in": Infinity}',
        b'{"name": 5, "role": "viewer"}',            # wrong type
        b'{"name": "x", "role": "emperor"}',         # unknown enum
        b'{"name": "x", "role": "viewer", "extra": 1}',  # unknown field
        b'[]',
        b'',
    ]
    for body in cases:
        r = admin.post("/api/tokens", content=body, headers=json_h)
        assert _is_clear_4xx(r, 400), (body, r.status_code, r.text)
    r = admin.post("/api/tokens", content=b'{"name": NaN}', headers=json_h)
    assert "NaN is not valid JSON" in r.json()["error"]
    r = admin.post("/api/tokens", content=b'{"name": "x", "role": "viewer", "n": 1e400}',
                   headers=json_h)  # was stored (as in artifact metadata) as infinity
    assert _is_clear_4xx(r, 400) and "too large for a float" in r.json()["error"]
    mlflow = client("researcher").post("/api/2.0/mlflow/runs/log-metric", headers=json_h,
                                       content=b'{"run_id": "ab12", "key": "x", "value": NaN, '
                                               b'"timestamp": 1, "step": 0}')
    assert _is_clear_4xx(mlflow, 400) and mlflow.json()["error_code"] == "INVALID_PARAMETER_VALUE"


def test_query_parameters_of_the_wrong_type_are_400(server, client) -> None:
    c = client("viewer")
    for params in ({"limit": "ten"}, {"limit": 0}, {"offset": -1}, {"order": "sideways"},
                   {"cursor": "!!!"}, {"sort": "nope"}, {"filter": "config.lr <"},
                   {"project": "../../etc"}, {"status": "finished"}):
        r = c.get("/api/runs", params=params)
        assert _is_clear_4xx(r, 400), (params, r.status_code, r.text)
    r = c.get("/api/runs", params={"status": "complete"})  # matched no run, silently
    assert "did you mean 'completed'" in r.json()["hint"]
    r = c.get("/api/runs/abcd1234/history", params={"max_points": "many"})
    assert _is_clear_4xx(r, 400)


def test_unknown_ids_are_404(server, client) -> None:
    c = client("admin")
    for path in ("/api/runs/doesnotexist", "/api/runs/doesnotexist/keys",
                 "/api/runs/doesnotexist/history", "/api/nope"):
        assert _is_clear_4xx(c.get(path), 404), path
    assert _is_clear_4xx(c.delete("/api/tokens/zzzzzzzzzz"), 404)
    r = c.get("/api/2.0/mlflow/runs/get", params={"run_id": "0" * 32})
    assert _is_clear_4xx(r, 404) and r.json()["error_code"] == "RESOURCE_DOES_NOT_EXIST"
    r = c.get("/api/2.0/mlflow/experiments/get", params={"experiment_id": "999"})
    assert _is_clear_4xx(r, 404)


def test_path_traversal_in_path_parameters_is_refused(server, client, data_dir) -> None:
    c = client("admin")
    evil = ["..", "..%2F..%2Fetc", "%2E%2E", "a.b", "a%00b", "a%2Fb", "x" * 65]
    for rid in evil:
        for path in (f"/api/runs/{rid}", f"/api/runs/{rid}/history",
                     f"/api/runs/{rid}/records"):
            r = c.get(path)
            assert r.status_code in (400, 404), (path, r.status_code)
        r = c.post(f"/api/runs/{rid}/records", content=b"",
                   headers={"Content-Type": "application/x-assay-wal"})
        assert r.status_code in (400, 404, 405), (rid, r.status_code)
    r = c.get("/api/2.0/mlflow/metrics/get-history",
              params={"run_id": "../../etc", "metric_key": "x"})
    assert _is_clear_4xx(r, 400)
    r = c.get("/api/runs", params={"project": "../x"})
    assert _is_clear_4xx(r, 400)
    assert not (data_dir.parent / "etc").exists()
    assert sorted(p.name for p in (data_dir / "wal").glob("*")) == [] \
        if (data_dir / "wal").exists() else True


def test_oversized_bodies_are_413_with_the_error_shape(server, client) -> None:
    big = b'{"name": "' + b"x" * (2 << 20) + b'"}'
    r = client("admin").post("/api/tokens", content=big,
                             headers={"Content-Type": "application/json"})
    assert _is_clear_4xx(r, 413)
    r = client("researcher").post("/api/2.0/mlflow/runs/log-batch", content=b"[" + b"0," * (9 << 20) + b"0]",
                                  headers={"Content-Type": "application/json"})
    assert _is_clear_4xx(r, 413)


def test_bad_requests_lose_nothing_already_stored(server, client, tokens, local_dir,
                                                  helpers) -> None:
    run = helpers.RemoteRunHarness(local_dir, server.url, tokens["researcher"])
    for step in range(100):
        run.log({"x": float(step)}, step)
    assert run.sync()
    c = client("researcher")
    for body in (b"garbage", b"AW\xff\xff\xff\xff\0\0\0\0", b"AW" + b"\0" * 8):
        r = c.post(f"/api/runs/{run.run_id}/records", content=body,
                   headers={"Content-Type": "application/x-assay-wal"})
        assert _is_clear_4xx(r, 400)
    assert run.finish() is True
    viewer = client("viewer")
    rec = helpers.wait_for(lambda: (r := viewer.get(f"/api/runs/{run.run_id}").json())
                           .get("status") == "completed" and r)
    assert rec["last_step"] == 99
    h = viewer.get(f"/api/runs/{run.run_id}/history", params={"key": "x"}).json()
    assert h["series"]["x"]["total"] == 100
    assert client("admin").get("/api/audit/verify").json()["ok"] is True
