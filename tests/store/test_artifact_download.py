"""Artifact downloads, repairs and inputs (from review): the record of a download sits beside
its folder, concurrent downloads take turns, a changed or foreign folder is never trusted."""

from __future__ import annotations

import logging
import os
import threading

import assay
import pytest
from assay.errors import ConflictError, IntegrityError, UserInputError
from assay.sdk.graph import open_graph


def _init(**kw):
    kw.setdefault("system_metrics_interval", None)
    kw.setdefault("capture", False)
    kw.setdefault("project", "p")
    return assay.init(**kw)


@pytest.fixture
def logged(data_dir, tmp_path):
    src = tmp_path / "ds"
    (src / "sub").mkdir(parents=True)
    (src / "a.txt").write_text("a")
    (src / "sub" / "b.txt").write_text("b")
    other = tmp_path / "other"
    other.mkdir()
    (other / "x.txt").write_text("x")
    with _init() as run:
        ds = run.log_artifact(src, name="ds")
        ot = run.log_artifact(other, name="other")
    return {"src": src, "ds": ds, "other": ot}


def _files(root):
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


def test_a_downloaded_folder_holds_only_the_artifacts_files_and_relogs_as_the_same_version(
        logged, tmp_path):
    path = logged["ds"].download(tmp_path / "dl")
    assert _files(path) == ["a.txt", "sub/b.txt"]
    with _init() as run:
        again = run.log_artifact(path, name="ds")
    assert again.version == logged["ds"].version == 0


def test_a_folder_holding_another_version_is_refused_not_returned(logged, tmp_path):
    root = tmp_path / "shared"
    logged["ds"].download(root)
    with pytest.raises(UserInputError, match="holds ds:v0, not other:v0"):
        logged["other"].download(root)
    assert _files(root) == ["a.txt", "sub/b.txt"]  # left as it was


def test_a_changed_cached_download_is_redone_but_a_chosen_folder_is_never_deleted(
        logged, tmp_path):
    cached = logged["ds"].download()
    f = cached / "a.txt"
    os.chmod(f, 0o644)
    f.write_text("edited by hand")
    assert (logged["ds"].download() / "a.txt").read_text() == "a"  # assay's own cache
    chosen = logged["ds"].download(tmp_path / "dl")
    os.chmod(chosen / "a.txt", 0o644)
    (chosen / "a.txt").write_text("edited by hand")
    os.chmod(chosen, 0o755)
    (chosen / "my_results.csv").write_text("mine")
    with pytest.raises(UserInputError, match="does not hold ds:v0"):
        logged["ds"].download(tmp_path / "dl")
    assert (chosen / "my_results.csv").read_text() == "mine"
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    with pytest.raises(UserInputError, match="does not hold ds:v0"):
        logged["ds"].download(mine)
    assert (mine / "notes.txt").read_text() == "keep me"


def test_a_folder_made_where_a_download_was_removed_is_not_deleted(logged, tmp_path):
    import shutil

    root = tmp_path / "dl"
    logged["ds"].download(root)
    for d, _, _ in os.walk(root):
        os.chmod(d, 0o755)
    shutil.rmtree(root)  # the user removes the download (its record stays beside it)
    root.mkdir()
    (root / "thesis.tex").write_text("years of work")
    with pytest.raises(UserInputError):
        logged["ds"].download(root)
    assert (root / "thesis.tex").read_text() == "years of work"
    assert _files(root) == ["thesis.tex"]


def test_download_into_the_working_directory(logged, tmp_path, monkeypatch):
    here = tmp_path / "here"
    here.mkdir()
    monkeypatch.chdir(here)
    assert _files(logged["ds"].download(".")) == ["a.txt", "sub/b.txt"]


def test_a_download_a_crash_left_without_its_record_is_redone(logged, data_dir):
    path = logged["ds"].download()
    (path.parent / f".{path.name}.assay.json").unlink()
    (path / "sub").chmod(0o755)
    (path / "sub" / "b.txt").unlink()  # incomplete, as a crash could leave it
    assert _files(logged["ds"].download()) == ["a.txt", "sub/b.txt"]


def test_processes_downloading_one_version_at_once_take_turns(logged):
    errors, paths = [], []

    def one():
        try:
            paths.append(assay.Api().artifact("ds:v0").download())
        except Exception as e:  # noqa: BLE001 - any error fails the test below
            errors.append(e)

    threads = [threading.Thread(target=one) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(set(paths)) == 1 and _files(paths[0]) == ["a.txt", "sub/b.txt"]


def test_logging_the_same_content_again_repairs_a_rotted_blob(logged, data_dir, tmp_path):
    g = open_graph(data_dir)
    blob = g.blobs.path_of(logged["ds"].files()[0].digest)
    os.chmod(blob, 0o644)
    blob.write_bytes(b"rot")
    with pytest.raises(IntegrityError):
        logged["ds"].download(tmp_path / "before")
    with _init() as run:
        run.log_artifact(logged["src"], name="ds")
    assert _files(logged["ds"].download(tmp_path / "after")) == ["a.txt", "sub/b.txt"]


def test_aliases_as_a_string_and_a_linked_file_name(logged, tmp_path, caplog):
    model = tmp_path / "blob-123abc"
    model.write_bytes(b"weights")
    link = tmp_path / "model.pt"
    link.symlink_to(model)
    with _init() as run:
        with pytest.raises(UserInputError, match="list of names"):
            run.log_artifact(link, name="m", aliases="prod")  # type: ignore[arg-type]
        m = run.log_artifact(link, name="m", aliases=["prod"])
        with caplog.at_level(logging.WARNING):
            run.log_artifact(link, name="m", metadata={"acc": 0.9})
    assert [e.path for e in m.files()] == ["model.pt"]
    assert m.download().name == "model.pt" and list(m.aliases) == ["latest", "prod"]
    assert "identical to v0" in caplog.text


def test_a_run_whose_server_is_unreachable_refuses_artifacts_and_keeps_none_locally(
        tmp_path, monkeypatch):
    """Its artifacts go to the server (tests/api/test_api_remote_artifacts.py); a server that
    never acknowledges the run is a clear error, and nothing lands in the local directory
    (which the server never reads)."""
    import assay.sdk.run as sdk_run

    monkeypatch.setattr(sdk_run, "REMOTE_FINISH_TIMEOUT", 1.0)
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "a.txt").write_text("a")
    run = assay.init(project="p", server="http://127.0.0.1:9", token="x", dir=tmp_path,
                     capture=False, system_metrics_interval=None)
    try:
        with pytest.raises(ConflictError, match="has not acknowledged"):
            run.log_artifact(tmp_path / "data", name="ds")
        with pytest.raises(ConflictError, match="127.0.0.1:9"):
            run.use_artifact("ds:latest")
        assert not (tmp_path / "blobs").exists() and not (tmp_path / "lance").exists()
    finally:
        run._sender.abandon()
        run.finish()
