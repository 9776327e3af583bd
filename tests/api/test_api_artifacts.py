"""Deleting artifact versions and collecting blobs over HTTP, against a real uvicorn server."""

from __future__ import annotations

import os
import time

import pytest
from assay.sdk.graph import open_graph

pytestmark = pytest.mark.integration


@pytest.fixture
def model(data_dir, tmp_path, server, tokens, local_dir, helpers):
    """model:v0 (alias prod) and model:v1 (latest), logged straight into the registry: v0 by
    run0, which the researcher token created on the server, v1 by run1, which has no owner."""
    run = helpers.RemoteRunHarness(local_dir, server.url, tokens["researcher"], run_id="run0")
    assert run.finish()
    reg = open_graph(data_dir.resolve()).artifacts
    d = tmp_path / "m"
    d.mkdir()
    (d / "w.bin").write_text("zero")
    reg.log(d, "model", "model", project="p", run_id="run0", aliases=["prod"])
    (d / "w.bin").write_text("one")
    reg.log(d, "model", "model", project="p", run_id="run1")
    return reg


def test_researcher_deletes_a_version_and_viewers_no_longer_see_it(server, client, model):
    assert client("viewer").delete("/api/artifacts/model/v0").status_code == 403
    assert client("viewer").get("/api/artifacts/model/v0").status_code == 200  # unchanged
    c = client("researcher")
    r = c.delete("/api/artifacts/model/v0", params={"reason": "leaked labels"})
    assert r.status_code == 409 and "prod" in r.json()["error"]
    assert "delete_aliases" in r.json()["hint"]
    r = c.delete("/api/artifacts/model/v0",
                 params={"reason": "leaked labels", "delete_aliases": "true"})
    assert r.status_code == 200, r.text
    assert r.json() == {"deleted": "model:v0", "name": "model", "version": 0,
                        "digest": r.json()["digest"], "aliases_removed": ["prod"]}
    v = client("viewer")
    got = v.get("/api/artifacts/model/v0")
    assert got.status_code == 404 and "deleted by researcher" in got.json()["error"]
    assert v.get("/api/artifacts/model/prod").status_code == 404
    assert [a["id"] for a in v.get("/api/artifacts").json()["artifacts"]] == ["model:v1"]
    lin = v.get("/api/lineage", params={"node": "artifact:model:v0", "direction": "up"})
    assert lin.status_code == 200, lin.text  # a deleted version keeps its lineage
    assert {e["src"] for e in lin.json()["edges"]} == {"run:run0"}
    # ... and reads as deleted, with its type (it read as a live version of type '').
    got = v.get("/api/lineage", params={"node": "artifact:model:v0", "direction": "up"}).json()
    nodes = {n["id"]: n for n in got["nodes"]}
    assert (nodes["artifact:model:v0"]["deleted"], nodes["artifact:model:v0"]["type"]) == (True, "model")
    rows = client("supervisor").get("/api/audit").json()["entries"]
    assert any(e["action"] == "artifact.delete" and e["actor"] == "researcher"
               and e["reason"] == "leaked labels" for e in rows), rows
    again = c.delete("/api/artifacts/model/v0", params={"delete_aliases": "true"})
    assert again.status_code == 409 and "already deleted" in again.json()["error"]


def test_researchers_delete_only_versions_their_own_runs_logged(server, client, model):
    def listed():
        return [(a["id"], a["aliases"]) for a in client("viewer").get("/api/artifacts").json()[
            "artifacts"]]

    before = listed()
    r = client("researcher2").delete("/api/artifacts/model/v0", params={"delete_aliases": "1"})
    assert r.status_code == 403, r.text
    assert "logged by run run0, which belongs to researcher" in r.json()["error"]
    assert "your own runs" in r.json()["hint"]
    r = client("researcher").delete("/api/artifacts/model/v1", params={"delete_aliases": "1"})
    assert r.status_code == 403 and "no token of this server created" in r.json()["error"]
    assert listed() == before  # refusals change nothing
    r = client("supervisor").delete("/api/artifacts/model/v1", params={"delete_aliases": "1"})
    assert r.status_code == 200, r.text
    assert listed() == [("model:v0", ["latest", "prod"])]  # latest moved back to v0
    r = client("researcher").delete("/api/artifacts/model/v0", params={"delete_aliases": "1"})
    assert r.status_code == 200, r.text


def test_starting_a_run_under_the_id_that_logged_a_version_does_not_make_it_yours(
        server, client, tokens, local_dir, model, helpers):
    # model:v1 was logged straight into the data directory by run1; run ids are chosen by
    # clients, so researcher2 can start a run with that id on the server afterwards.
    run = helpers.RemoteRunHarness(local_dir, server.url, tokens["researcher2"], run_id="run1")
    assert run.finish()
    r = client("researcher2").delete("/api/artifacts/model/v1", params={"delete_aliases": "1"})
    assert r.status_code == 403, r.text
    assert "logged before researcher2 started run run1" in r.json()["error"]
    assert client("viewer").get("/api/artifacts/model/v1").status_code == 200


@pytest.mark.parametrize("path, params, status, text", [
    ("/api/artifacts/model/latest", {}, 400, "exact version"),
    ("/api/artifacts/model/prod", {"delete_aliases": "true"}, 400, "exact version"),
    ("/api/artifacts/model/v9", {}, 404, "no artifact version model:v9"),
    ("/api/artifacts/nope/v0", {}, 404, "no artifact named"),
    ("/api/artifacts/model/v-1", {}, 400, ""),
    ("/api/artifacts/model/v1", {"delete_aliases": "perhaps"}, 400, ""),
    ("/api/artifacts/model/v1", {"reason": "x" * 2001}, 400, ""),
])
def test_bad_deletes_are_4xx_with_a_hint_and_change_nothing(server, client, model, path, params,
                                                            status, text):
    r = client("researcher").delete(path, params=params)
    assert r.status_code == status, r.text
    assert text in r.json()["error"] + " " + r.json()["hint"]
    listed = client("viewer").get("/api/artifacts").json()["artifacts"]
    assert [(a["id"], a["aliases"]) for a in listed] == [("model:v0", ["prod"]),
                                                        ("model:v1", ["latest"])]


def test_gc_is_for_admins_and_reports_a_dry_run(server, client, model):
    body = {"dry_run": True, "grace_seconds": 0}
    assert client("researcher").post("/api/artifacts/gc", json=body).status_code == 403
    assert client("supervisor").post("/api/artifacts/gc", json=body).status_code == 403
    c = client("admin")
    assert c.post("/api/artifacts/gc", json={"grace_seconds": -1}).status_code == 400
    assert c.post("/api/artifacts/gc", json={"dryrun": True}).status_code == 400
    r = client("researcher").delete("/api/artifacts/model/v0", params={"delete_aliases": "1"})
    assert r.status_code == 200
    t = time.time() - 7200
    for b in model.blobs.iter_blobs():
        os.utime(model.blobs.path_of(b.digest), (t, t))
    dry = c.post("/api/artifacts/gc", json=body).json()
    assert dry["dry_run"] and dry["swept"] == 2 and len(dry["digests"]) == 2
    assert all(model.blobs.exists(d) for d in dry["digests"])
    real = c.post("/api/artifacts/gc", json={"grace_seconds": 3600}).json()
    assert real["swept"] == 2 and not any(model.blobs.exists(d) for d in real["digests"])
    assert model.get("model:latest").version == 1
    assert client("viewer").get("/api/artifacts/model/v1").json()["manifest"]
