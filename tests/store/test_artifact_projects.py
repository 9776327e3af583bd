"""Artifact names are shared by a data directory's projects: one project's versions never
silently become another's (an artifacts review: project "nlp" logging `model` made
`use_artifact("model:latest")` in project "vision" return nlp's weights)."""

from __future__ import annotations

import assay
import pytest
from assay.errors import ConflictError

pytestmark = pytest.mark.integration


def _init(project):
    return assay.init(project=project, system_metrics_interval=None, capture=False)


def test_another_project_cannot_add_versions_or_move_aliases_but_can_share_and_read(
        data_dir, tmp_path):
    weights = tmp_path / "model.pt"
    weights.write_bytes(b"vision weights")
    with _init("vision") as r:
        v0 = r.log_artifact(weights, name="model", type="model", aliases=["prod"])
    other = tmp_path / "nlp.pt"
    other.write_bytes(b"nlp weights")
    with _init("nlp") as r:
        with pytest.raises(ConflictError, match="belongs to project 'vision'") as e:
            r.log_artifact(other, name="model", type="model")
        assert "'nlp-model'" in e.value.hint
        # The same bytes (a shared dataset, say) record this run's edge and change nothing.
        same = r.log_artifact(weights, name="model", type="model", aliases=["prod"])
        assert (same.name, same.version) == ("model", 0)
        with pytest.raises(ConflictError, match="move its aliases"):
            r.log_artifact(weights, name="model", type="model", aliases=["best"])
        assert r.use_artifact("model:prod").version == 0  # reading is fine
        mine = r.log_artifact(other, name="nlp-model", type="model")
    api = assay.Api()
    assert api.artifact("model:latest").digest == v0.digest
    assert set(api.artifact("model:v0").aliases) == {"latest", "prod"}
    assert api.artifacts(name="model")["version"].to_list() == [0]  # nothing was added
    assert api.artifact("nlp-model:latest").version == mine.version == 0
    with _init("vision") as r:  # the owner goes on as before
        weights.write_bytes(b"vision weights, retrained")
        assert r.log_artifact(weights, name="model", type="model").version == 1


def test_a_commit_killed_after_its_row_is_completed_by_the_retry_not_duplicated(
        data_dir, tmp_path, monkeypatch):
    """Killed between the version row and its aliases, a commit left `m:v1` that neither
    `latest` nor lineage knew, and logging the same bytes again made an identical v2
    (artifacts review)."""
    from assay.store.artifacts import ArtifactRegistry

    f = tmp_path / "m.bin"
    f.write_bytes(b"v0")
    with _init("p") as r:
        r.log_artifact(f, name="m", type="model")
    f.write_bytes(b"v1")
    real = ArtifactRegistry._move_alias

    def killed(self, name, alias, version, actor, reason):
        if reason == "new version":
            raise KeyboardInterrupt("killed")
        return real(self, name, alias, version, actor, reason)

    monkeypatch.setattr(ArtifactRegistry, "_move_alias", killed)
    with _init("p") as r, pytest.raises(KeyboardInterrupt):
        r.log_artifact(f, name="m", type="model", aliases=["prod"])
    monkeypatch.setattr(ArtifactRegistry, "_move_alias", real)
    api = assay.Api()
    assert api.artifact("m:latest").version == 0  # the half-made v1 is not latest
    with _init("p") as r:
        again = r.log_artifact(f, name="m", type="model", aliases=["prod"])
    assert again.version == 1
    assert api.artifacts(name="m")["version"].to_list() == [0, 1]
    assert set(api.artifact("m:v1").aliases) == {"latest", "prod"}
    _, edges = api.lineage("m:v1", direction="up")
    assert f"run:{r.id}" in edges["src"].to_list()  # the producing edge is there
    # A version deleted on purpose is not brought back by the same bytes.
    api.delete_artifact("m:v1", reason="bad", delete_aliases=True)
    with _init("p") as r:
        assert r.log_artifact(f, name="m", type="model").version == 2


def test_a_one_file_folder_logged_before_the_folder_flag_is_not_a_new_version_after_it(
        data_dir, tmp_path):
    """Manifests of one-file folders now carry a folder flag, which changes their digest: an
    upgraded assay made a new version of unchanged data, and refused another project's
    identical shared dataset (regression review)."""
    from assay.sdk.graph import open_graph
    from assay.store.manifests import build_manifest

    folder = tmp_path / "ds"
    folder.mkdir()
    (folder / "train.csv").write_text("x,y\n1,2\n")
    g = open_graph(data_dir)
    entries = build_manifest(folder, g.blobs)
    # What an older assay stored: the same entries, without the flag.
    old = g.artifacts.log_manifest(list(entries), "ds", "dataset", project="A")
    with _init("A") as r:
        assert r.log_artifact(folder, name="ds", type="dataset").version == old.version == 0
    with _init("B") as r:  # another project's identical shared dataset
        assert r.log_artifact(folder, name="ds", type="dataset").version == 0
    (folder / "train.csv").write_text("x,y\n1,3\n")
    with _init("A") as r:
        assert r.log_artifact(folder, name="ds", type="dataset").version == 1


def test_removing_an_alias_that_moved_since_it_was_checked_is_refused(data_dir, tmp_path):
    """The server checks who may change the version an alias names, then removes it: an
    alias moved in between was removed from a version nobody checked (regression review)."""
    f = tmp_path / "m.bin"
    f.write_bytes(b"a")
    with _init("p") as r:
        r.log_artifact(f, name="m", type="model", aliases=["prod"])
        f.write_bytes(b"b")
        r.log_artifact(f, name="m", type="model", aliases=["prod"])  # prod: v0 -> v1
    api = assay.Api()
    with pytest.raises(ConflictError, match="moved to v1"):
        api.remove_alias("m", "prod", reason="checked v0", expect_version=0)
    assert "prod" in api.artifact("m:v1").aliases
    assert api.remove_alias("m", "prod", reason="ok", expect_version=1).version == 1
