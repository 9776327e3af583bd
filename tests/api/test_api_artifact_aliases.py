"""Moving and removing artifact aliases over HTTP, against a real uvicorn server."""

from __future__ import annotations

import pytest
from assay.sdk.graph import open_graph

pytestmark = pytest.mark.integration


@pytest.fixture
def model(data_dir, tmp_path, server, tokens, local_dir, helpers):
    """model:v0 by run0 (which the researcher token created on the server) and model:v1
    (latest) by run1, which has no owner here."""
    run = helpers.RemoteRunHarness(local_dir, server.url, tokens["researcher"], run_id="run0")
    assert run.finish()
    reg = open_graph(data_dir.resolve()).artifacts
    d = tmp_path / "m"
    d.mkdir()
    (d / "w.bin").write_text("zero")
    reg.log(d, "model", "model", project="p", run_id="run0")
    (d / "w.bin").write_text("one")
    reg.log(d, "model", "model", project="p", run_id="run1")
    return reg


def _listed(client):
    return [(a["id"], a["aliases"]) for a in client("viewer").get("/api/artifacts").json()[
        "artifacts"]]


def test_researcher_promotes_their_version_to_prod_and_removes_it(server, client, model):
    c = client("researcher")
    r = c.put("/api/artifacts/model/aliases/prod", json={"version": 0, "reason": "best eval"})
    assert r.status_code == 200, r.text
    assert r.json() == {"name": "model", "alias": "prod", "version": 0, "id": "model:v0",
                        "previous_version": None, "aliases": ["prod"]}
    assert client("viewer").get("/api/artifacts/model/prod").json()["version"] == 0
    assert _listed(client) == [("model:v0", ["prod"]), ("model:v1", ["latest"])]
    again = c.put("/api/artifacts/model/aliases/prod", json={"version": 0})
    assert again.status_code == 200 and again.json()["previous_version"] == 0
    r = c.delete("/api/artifacts/model/aliases/prod", params={"reason": "rolled back"})
    assert r.status_code == 200, r.text
    assert r.json() == {"name": "model", "alias": "prod", "removed_from": 0, "id": "model:v0",
                        "aliases": []}
    assert client("viewer").get("/api/artifacts/model/prod").status_code == 404
    assert _listed(client) == [("model:v0", []), ("model:v1", ["latest"])]
    rows = client("supervisor").get("/api/audit").json()["entries"]
    moves = [(e["actor"], e["reason"], e["details"]["to"]) for e in rows
             if e["action"] == "artifact.alias" and e["details"]["alias"] == "prod"]
    assert sorted(moves, key=str) == sorted([("researcher", "best eval", 0),
                                             ("researcher", "rolled back", None)], key=str)


def test_only_the_versions_owner_or_a_supervisor_moves_its_aliases(server, client, model):
    assert client("viewer").put("/api/artifacts/model/aliases/prod",
                                json={"version": 0}).status_code == 403
    r = client("researcher2").put("/api/artifacts/model/aliases/prod", json={"version": 0})
    assert r.status_code == 403, r.text
    assert "belongs to researcher" in r.json()["error"] and "supervisor" in r.json()["hint"]
    r = client("researcher").put("/api/artifacts/model/aliases/prod", json={"version": 1})
    assert r.status_code == 403 and "no token of this server created" in r.json()["error"]
    assert _listed(client) == [("model:v0", []), ("model:v1", ["latest"])]
    r = client("supervisor").put("/api/artifacts/model/aliases/prod", json={"version": 1})
    assert r.status_code == 200, r.text
    # prod now names run1's version: the researcher may not remove it, a supervisor may
    r = client("researcher").delete("/api/artifacts/model/aliases/prod")
    assert r.status_code == 403 and "remove its alias 'prod'" in r.json()["error"]
    assert client("viewer").delete("/api/artifacts/model/aliases/prod").status_code == 403
    # ... but may move it onto their own version, as logging with aliases=["prod"] would
    r = client("researcher").put("/api/artifacts/model/aliases/prod", json={"version": 0})
    assert r.status_code == 200 and r.json()["previous_version"] == 1
    assert client("supervisor").delete("/api/artifacts/model/aliases/prod").status_code == 200


@pytest.mark.parametrize("method, path, body, status, text", [
    ("PUT", "/api/artifacts/model/aliases/latest", {"version": 0}, 400, "managed by assay"),
    ("DELETE", "/api/artifacts/model/aliases/latest", None, 400, "managed by assay"),
    ("PUT", "/api/artifacts/model/aliases/prod", {"version": 9}, 404, "versions v0..v1"),
    ("PUT", "/api/artifacts/nope/aliases/prod", {"version": 0}, 404, "no artifact named"),
    ("DELETE", "/api/artifacts/model/aliases/prod", None, 404, "latest (v1)"),
    ("DELETE", "/api/artifacts/nope/aliases/prod", None, 404, "no live version"),
    ("PUT", "/api/artifacts/model/aliases/v1", {"version": 0}, 400, "invalid alias"),
    ("PUT", "/api/artifacts/model/aliases/prod", {"version": -1}, 400, ""),
    ("PUT", "/api/artifacts/model/aliases/prod", {"version": "v0"}, 400, ""),
    ("PUT", "/api/artifacts/model/aliases/prod", {"version": 0, "why": "x"}, 400, ""),
    ("PUT", "/api/artifacts/model/aliases/prod", {"version": 0, "reason": "x" * 2001}, 400, ""),
    ("PUT", "/api/artifacts/model/aliases/9lives", {"version": 0}, 400, ""),
])
def test_bad_alias_requests_are_4xx_with_a_hint_and_change_nothing(
        server, client, model, method, path, body, status, text):
    r = client("supervisor").request(method, path, json=body)
    assert r.status_code == status, r.text
    assert r.json()["hint"]
    assert text in r.json()["error"] + " " + r.json()["hint"]
    assert _listed(client) == [("model:v0", []), ("model:v1", ["latest"])]


def test_a_deleted_version_cannot_take_an_alias(server, client, model):
    c = client("supervisor")
    assert c.delete("/api/artifacts/model/v0").status_code == 200
    r = c.put("/api/artifacts/model/aliases/prod", json={"version": 0})
    assert r.status_code == 404 and "was deleted by supervisor" in r.json()["error"]
