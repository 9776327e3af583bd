"""``assay.Api(server=...)`` for artifacts: list, fetch and download a version, move its
aliases, against a real uvicorn server, with the same frames as ``Api(dir)``."""

from __future__ import annotations

import json

import polars as pl
import pytest
from assay import Api
from assay.errors import AssayError, NotFoundError, PermissionDeniedError, UserInputError
from assay.sdk.graph import open_graph
from loopback_server import free_port

pytestmark = pytest.mark.integration


@pytest.fixture
def model(data_dir, tmp_path):
    """model:v0 (aliased staging, with metadata) and model:v1 (latest), a folder of two files."""
    reg = open_graph(data_dir.resolve()).artifacts
    d = tmp_path / "m"
    d.mkdir()
    (d / "w.bin").write_bytes(bytes(range(256)) * 40)
    (d / "cfg.json").write_text('{"depth": 2}')
    reg.log(d, "model", "model", project="p", run_id="run0", aliases=["staging"],
            metadata={"acc": 0.91, "nested": {"k": [1, 2]}}, description="first")
    (d / "w.bin").write_bytes(b"one")
    reg.log(d, "model", "model", project="p", run_id="run1")
    return d


@pytest.fixture
def laptop(tmp_path, monkeypatch):
    """The client's own data directory (its download cache), apart from the server's."""
    d = tmp_path / "laptop"
    monkeypatch.setenv("ASSAY_DIR", str(d))
    return d


def test_a_servers_versions_list_and_download_as_the_directorys(server, tokens, data_dir,
                                                                 model, laptop, tmp_path):
    local = Api(data_dir)
    with Api(server=server.url, token=tokens["viewer"]) as remote:
        assert remote.artifacts().equals(local.artifacts())
        assert remote.artifacts(name="model", project="p").equals(
            local.artifacts(name="model", project="p"))
        assert remote.artifacts(name="nothing").height == 0
        art = remote.artifact("model:staging")
        assert (art.version, art.aliases, art.metadata["nested"]) == (0, ("staging",),
                                                                        {"k": [1, 2]})
        got = art.download(tmp_path / "dl")
        assert (got / "w.bin").read_bytes() == bytes(range(256)) * 40
        assert json.loads((got / "cfg.json").read_text()) == {"depth": 2}
        cached = remote.artifact("model").download()  # latest, into this machine's cache
        assert cached.is_relative_to(laptop / "servers") and (cached / "w.bin").read_bytes() \
            == b"one"
        # This machine's own model:v1 is another version: its download leaves the
        # server's alone (they shared artifacts/model/v1 and swapped contents).
        mine = laptop / "m"
        mine.mkdir()
        (mine / "w.bin").write_bytes(b"mine")
        reg = open_graph(laptop).artifacts
        reg.log(mine, "model", "model", project="p", run_id="l0")
        theirs = remote.artifact("model:v0").download()
        local_copy = Api(laptop).artifact("model:v0").download()
        assert (local_copy / "w.bin").read_bytes() == b"mine" and local_copy != theirs
        assert (theirs / "w.bin").read_bytes() == bytes(range(256)) * 40
        with pytest.raises(NotFoundError):
            remote.artifact("model:prod")
        with pytest.raises(PermissionDeniedError):
            remote.set_alias("model:v1", "prod", reason="viewers cannot")
    assert "prod" not in (local.artifact("model:latest").aliases)


def test_a_supervisor_moves_and_removes_aliases_through_the_server(server, tokens, data_dir,
                                                                   model, laptop):
    local = Api(data_dir)
    with Api(server=server.url, token=tokens["supervisor"]) as sup:
        moved = sup.set_alias("model:staging", "prod", reason="best eval")
        assert moved.version == 0 and "prod" in moved.aliases
        assert local.artifact("model:prod").version == 0
        gone = sup.remove_alias("model", "prod", reason="rolled back")
        assert gone.version == 0 and "prod" not in gone.aliases
        with pytest.raises(NotFoundError):
            local.artifact("model:prod")
        trail = [e for e in local.audit_log() if e["action"].startswith("artifact.alias")]
        assert [(e["actor"], e["reason"]) for e in trail][-2:] == [
            ("supervisor", "best eval"), ("supervisor", "rolled back")]
        local.delete_artifact("model:v0", reason="leaked data", delete_aliases=True)
        assert sup.artifacts(include_deleted=True).equals(local.artifacts(include_deleted=True))
        assert sup.artifacts()["version"].to_list() == [1]


def test_a_server_that_is_away_fails_in_seconds(laptop):
    import time

    t0 = time.monotonic()
    with Api(server=f"http://127.0.0.1:{free_port()}") as api, pytest.raises(AssayError) as e:
        api.artifacts()
    assert time.monotonic() - t0 < 30 and "did not answer" in e.value.message


def test_deleted_versions_are_listed_to_supervisors_only(server, tokens, data_dir, model,
                                                         laptop):
    """A deleted version's digest names its manifest (and through it its files): viewers
    must not learn it, or deleting leaked data would not take it back."""
    Api(data_dir).delete_artifact("model:v0", reason="leaked data", delete_aliases=True)
    with Api(server=server.url, token=tokens["viewer"]) as viewer:
        assert viewer.artifacts()["version"].to_list() == [1]
        with pytest.raises(PermissionDeniedError, match="deleted artifact versions") as e:
            viewer.artifacts(include_deleted=True)
        assert "supervisors" in e.value.hint
    with Api(server=server.url, token=tokens["supervisor"]) as sup:
        assert sup.artifacts(include_deleted=True)["delete_reason"].to_list() == [
            "leaked data", None]


def test_api_delete_artifact_works_on_a_server_as_in_a_directory(server, tokens, data_dir,
                                                                   model, laptop):
    """Api(server=...).delete_artifact read the local data directory ("local only"),
    though the server deletes versions and Artifact.delete() reached it."""
    from assay.errors import ConflictError

    with Api(server=server.url, token=tokens["supervisor"]) as sup:
        with pytest.raises(UserInputError, match="exact version"):
            sup.delete_artifact("model:latest", reason="x")
        with pytest.raises(ConflictError, match="aliases"):
            sup.delete_artifact("model:v1", reason="x")  # latest names it
        gone = sup.delete_artifact("model:v0", reason="leaked data", delete_aliases=True)
        assert (gone.name, gone.version) == ("model", 0)
        assert sup.artifacts()["version"].to_list() == [1]
        with pytest.raises(NotFoundError, match="was deleted by supervisor at .*: leaked data"):
            sup.delete_artifact("model:v0", reason="again")
    tomb = Api(data_dir).artifacts(include_deleted=True).filter(pl.col("version") == 0)
    assert tomb["delete_reason"].to_list() == ["leaked data"]
    assert tomb["deleted_by"].to_list() == ["supervisor"]  # the token's name


def test_a_remote_alias_removal_checks_the_version_it_was_asked_about(server, tokens, data_dir,
                                                                      model, laptop):
    from assay.errors import ConflictError

    local = Api(data_dir)
    local.set_alias("model:v1", "prod", reason="r")
    with Api(server=server.url, token=tokens["supervisor"]) as sup:
        handle = sup.artifact("model:v0")
        with pytest.raises(ConflictError, match="moved to v1"):
            handle.remove_alias("prod", reason="only if v0")  # prod names v1, not v0
        with pytest.raises(ConflictError, match="moved to v1"):
            sup.remove_alias("model", "prod", reason="x", expect_version=0)
        assert local.artifact("model:prod").version == 1  # still there
        assert sup.remove_alias("model", "prod", reason="x", expect_version=1).version == 1


def test_empty_listings_have_the_same_columns_here_and_on_a_server(server, tokens, data_dir,
                                                                    laptop):
    local = Api(data_dir)
    with Api(server=server.url, token=tokens["supervisor"]) as sup:
        for kw in ({}, {"name": "nothing"}, {"include_deleted": True}):
            assert sup.artifacts(**kw).schema == local.artifacts(**kw).schema, kw


def test_step_bounds_past_64_bits_are_a_400_not_a_500(server, tokens, data_dir):
    import assay
    import httpx

    with assay.init(project="p", dir=data_dir) as run:
        run.log({"loss": 1.0}, step=3)
    h = {"Authorization": f"Bearer {tokens['viewer']}"}
    for path in (f"/api/runs/{run.id}/history", f"/api/runs/{run.id}/chunks"):
        for bound in (2**63, -(2**63) - 1):
            r = httpx.get(server.url + path, params={"step_max": bound}, headers=h)
            assert r.status_code in (400, 422), (path, bound, r.text)
        ok_ = httpx.get(server.url + path, params={"step_max": 2**63 - 1}, headers=h)
        assert ok_.status_code == 200, ok_.text


def test_a_history_window_answers_every_key_asked_for(server, tokens, data_dir):
    """Only the chunks holding the window are read; a key with no point in it is still
    answered (empty), as when whole curves were read and cut."""
    import assay
    import httpx

    with assay.init(project="p", dir=data_dir, capture=False, system_metrics_interval=0) as run:
        for s in range(3):
            run.log({"loss": float(s), "val/acc": 0.5}, step=s)
        run.flush()
        for s in range(3, 30):
            run.log({"loss": float(s)}, step=s)
    h = {"Authorization": f"Bearer {tokens['viewer']}"}
    for keys in (["loss", "val/acc"], []):
        r = httpx.get(f"{server.url}/api/runs/{run.id}/history", headers=h,
                      params={"key": keys, "step_min": 10, "step_max": 20})
        series = r.json()["series"]
        assert series["val/acc"] == {"total": 0, "returned": 0, "step": [], "value": [],
                                     "time": []}, r.text
        assert series["loss"]["step"][:2] == [10, 11] and series["loss"]["total"] == 11
        assert "nope" not in series
