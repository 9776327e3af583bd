"""The official mlflow client's artifact calls against assay's "mlflow-artifacts" proxy, on
loopback: uploads, listings and downloads round-trip byte for byte, writes belong to the run's
owner, and no path leaves the artifact store."""

from __future__ import annotations

import filecmp
import http.client
import json
import os
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

mlflow = pytest.importorskip("mlflow")
from loopback_server import raw_request  # tests/ is on sys.path (rootdir conftest)
from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository
from mlflow.tracking import MlflowClient

ROOT = "/api/2.0/mlflow-artifacts/artifacts"


def _raw(server, method: str, path: str, token: str | None, body: bytes | None = None,
         headers: dict[str, str] | None = None) -> tuple[int, dict]:
    return raw_request(server, method, path, token, raw=body, headers=headers)


def _files_under(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}


def test_log_list_and_download_round_trip_and_survive_a_restart(
        mlflow_env, tmp_path, data_dir, helpers) -> None:
    src = tmp_path / "src"
    (src / "dir" / "sub").mkdir(parents=True)
    weights = src / "model.pt"
    weights.write_bytes(os.urandom(2_500_000))  # several chunks
    (src / "dir" / "a.txt").write_text("alpha\n")
    (src / "dir" / "sub" / "b.bin").write_bytes(bytes(range(256)) * 3)
    (src / "dir" / "sub" / "empty").write_bytes(b"")

    mlflow.set_experiment("artifacts")
    with mlflow.start_run() as run:
        mlflow.log_artifact(str(weights))
        mlflow.log_artifact(str(weights), artifact_path="ckpt/best")
        mlflow.log_artifacts(str(src / "dir"), artifact_path="dir")
        mlflow.log_dict({"lr": 0.1, "layers": [1, 2]}, "config/params.json")
        mlflow.log_text("héllo wörld", "notes/readme.txt")
    rid, uri = run.info.run_id, run.info.artifact_uri
    assert uri == f"mlflow-artifacts:/{run.info.experiment_id}/{rid}/artifacts"

    c = MlflowClient()
    top = {(f.path, f.is_dir, f.file_size) for f in c.list_artifacts(rid)}
    assert top == {("ckpt", True, None), ("config", True, None), ("dir", True, None),
                   ("model.pt", False, 2_500_000), ("notes", True, None)}
    assert [(f.path, f.is_dir, f.file_size) for f in c.list_artifacts(rid, "dir")] == [
        ("dir/a.txt", False, 6), ("dir/sub", True, None)]  # not recursive
    assert [(f.path, f.file_size) for f in c.list_artifacts(rid, "dir/sub")] == [
        ("dir/sub/b.bin", 768), ("dir/sub/empty", 0)]
    assert c.list_artifacts(rid, "no/such/dir") == []

    def check(dst: Path) -> None:
        got = Path(mlflow.artifacts.download_artifacts(run_id=rid, dst_path=str(dst)))
        assert filecmp.cmp(got / "model.pt", weights, shallow=False)
        assert filecmp.cmp(got / "ckpt" / "best" / "model.pt", weights, shallow=False)
        assert (got / "dir" / "sub" / "b.bin").read_bytes() == bytes(range(256)) * 3
        assert (got / "dir" / "sub" / "empty").read_bytes() == b""
        assert json.loads((got / "config" / "params.json").read_text()) == {
            "lr": 0.1, "layers": [1, 2]}
        assert mlflow.artifacts.load_text(f"{uri}/notes/readme.txt") == "héllo wörld"
        one = c.download_artifacts(rid, "dir/a.txt", str(dst / "one"))
        assert Path(one).read_text() == "alpha\n"

    check(tmp_path / "dl1")
    # The bytes are plain files under the data directory, and a new server serves them.
    stored = data_dir / "mlflow-artifacts" / "files" / run.info.experiment_id / rid / "artifacts"
    assert filecmp.cmp(stored / "model.pt", weights, shallow=False)
    mlflow_env.stop()
    again = helpers.ThreadServer(data_dir, port=mlflow_env.port).start()
    try:
        check(tmp_path / "dl2")
    finally:
        again.stop()


def test_log_figure_and_overwrite(mlflow_env, tmp_path) -> None:
    plt = pytest.importorskip("matplotlib.pyplot")
    mlflow.set_experiment("figures")
    with mlflow.start_run() as run:
        fig, ax = plt.subplots()
        ax.plot([1, 2, 3])
        mlflow.log_figure(fig, "plots/curve.png")
        plt.close(fig)
        mlflow.log_text("v1", "state.txt")
        mlflow.log_text("version two", "state.txt")  # replaces, as MLflow does
    png = Path(mlflow.artifacts.download_artifacts(run_id=run.info.run_id,
                                                   artifact_path="plots/curve.png",
                                                   dst_path=str(tmp_path)))
    assert png.read_bytes().startswith(b"\x89PNG")
    assert mlflow.artifacts.load_text(f"runs:/{run.info.run_id}/state.txt") == "version two"


def test_sklearn_model_saved_as_artifacts_loads_back(mlflow_env, tmp_path) -> None:
    pytest.importorskip("sklearn")
    import mlflow.pyfunc
    import mlflow.sklearn
    import numpy as np
    from sklearn.linear_model import LinearRegression

    x = np.arange(20.0).reshape(-1, 1)
    model = LinearRegression().fit(x, 3 * x[:, 0] - 1)
    mlflow.set_experiment("sk")
    with mlflow.start_run() as run:
        mlflow.sklearn.save_model(model, str(tmp_path / "model"), pip_requirements=["scikit-learn"])
        mlflow.log_artifacts(str(tmp_path / "model"), artifact_path="model")
    rid = run.info.run_id
    listed = {f.path for f in MlflowClient().list_artifacts(rid, "model")}
    assert listed == {f"model/{p.name}" for p in (tmp_path / "model").iterdir()}
    assert "model/MLmodel" in listed
    loaded = mlflow.sklearn.load_model(f"runs:/{rid}/model")
    assert loaded.predict(x[:3]).tolist() == pytest.approx([-1.0, 2.0, 5.0])
    pyfunc = mlflow.pyfunc.load_model(f"runs:/{rid}/model")
    assert pyfunc.predict(x[:3]).tolist() == pytest.approx([-1.0, 2.0, 5.0])


def test_writes_belong_to_the_runs_owner_and_viewers_read(
        mlflow_env, tokens, monkeypatch, tmp_path, data_dir) -> None:
    f = tmp_path / "w.txt"
    f.write_text("mine")
    mlflow.set_experiment("owned")
    with mlflow.start_run() as run:
        mlflow.log_artifact(str(f))
    rid, exp = run.info.run_id, run.info.experiment_id
    base = f"{ROOT}/{exp}/{rid}/artifacts"

    monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", tokens["researcher2"])  # another researcher
    with pytest.raises(Exception, match="403") as e:
        MlflowClient().log_artifact(rid, str(f), "intruder")
    assert "belongs to researcher" in str(e.value)
    status, body = _raw(mlflow_env, "DELETE", f"{base}/w.txt", tokens["researcher2"])
    assert status == 403 and body["error_code"] == "PERMISSION_DENIED"

    monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", tokens["viewer"])
    assert [a.path for a in MlflowClient().list_artifacts(rid)] == ["w.txt"]
    got = MlflowClient().download_artifacts(rid, "w.txt", str(tmp_path / "v"))
    assert Path(got).read_text() == "mine"
    with pytest.raises(Exception, match="403"):
        MlflowClient().log_artifact(rid, str(f), "viewer")
    status, body = _raw(mlflow_env, "GET", f"/ajax-api/2.0/mlflow-artifacts/artifacts"
                        f"?path={exp}/{rid}/artifacts", tokens["viewer"])
    assert status == 200 and body == {"files": [{"path": "w.txt", "is_dir": False,
                                                 "file_size": 4}]}
    status, body = _raw(mlflow_env, "GET", f"{base}/w.txt", None)
    assert status == 401 and body["error_code"] == "UNAUTHENTICATED"

    monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", tokens["supervisor"])  # may write any run
    MlflowClient().log_artifact(rid, str(f), "reviewed")
    assert not (data_dir / "mlflow-artifacts" / "files" / exp / rid / "artifacts"
                / "intruder").exists()

    monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", tokens["researcher"])  # the owner deletes
    repo = get_artifact_repository(run.info.artifact_uri)
    repo.delete_artifacts("reviewed")
    assert [a.path for a in MlflowClient().list_artifacts(rid)] == ["w.txt"]
    repo.delete_artifacts("reviewed")  # gone already: fine, as in MLflow
    repo.delete_artifacts()  # the whole root
    assert MlflowClient().list_artifacts(rid) == []


def test_writes_stay_inside_the_runs_own_artifacts(mlflow_env, tokens, tmp_path) -> None:
    mlflow.set_experiment("bound")
    with mlflow.start_run() as run:
        mlflow.log_text("x", "file.txt")
        mlflow.log_text("y", "d/inner.txt")
    other = mlflow.set_experiment("elsewhere").experiment_id
    rid, exp = run.info.run_id, run.info.experiment_id
    tok = tokens["researcher"]
    for path, status, code in [
        (f"{other}/{rid}/artifacts/x", 404, "RESOURCE_DOES_NOT_EXIST"),  # not its experiment
        (f"{exp}/0123456789abcdef/artifacts/x", 404, "RESOURCE_DOES_NOT_EXIST"),
        (f"{exp}/{rid}/metadata/x", 400, "INVALID_PARAMETER_VALUE"),  # outside artifacts/
        (f"{exp}/{rid}/artifacts", 400, "INVALID_PARAMETER_VALUE"),  # no file name
        (f"{exp}/{rid}/artifacts/d", 409, "RESOURCE_ALREADY_EXISTS"),  # a directory
        (f"{exp}/{rid}/artifacts/file.txt/x", 409, "RESOURCE_ALREADY_EXISTS"),  # under a file
    ]:
        got, body = _raw(mlflow_env, "PUT", f"{ROOT}/{path}", tok, b"data")
        assert (got, body.get("error_code")) == (status, code), path
        assert body["error"] and body["message"] == body["error"]
    MlflowClient().delete_run(rid)
    got, body = _raw(mlflow_env, "PUT", f"{ROOT}/{exp}/{rid}/artifacts/late", tok, b"z")
    assert got == 400 and "deleted" in body["error"]


def test_path_traversal_is_refused_with_400(mlflow_env, tokens, data_dir) -> None:
    mlflow.set_experiment("traversal")
    with mlflow.start_run() as run:
        mlflow.log_text("x", "ok.txt")
        with pytest.raises(Exception, match="Invalid artifact path"):
            mlflow.log_text("x", "../escape.txt")  # the client refuses it too
    base = f"{ROOT}/{run.info.experiment_id}/{run.info.run_id}/artifacts"
    store = data_dir / "mlflow-artifacts"
    before = _files_under(store)
    secret = "auth/tokens.json"
    token_file = (data_dir / secret).read_bytes()
    for method, tok in (("PUT", tokens["researcher"]), ("GET", tokens["viewer"]),
                        ("DELETE", tokens["supervisor"])):
        for path in [f"{base}/../../../../{secret}", f"{base}/%2e%2e/%2E%2E/x",
                     f"{base}/..%2f..%2f..%2f..%2f{secret}", f"{ROOT}/%2f{secret}",
                     f"{ROOT}//etc/passwd", f"{base}/a%00b", f"{base}/a%5c..%5cb",
                     f"{base}/./x", f"{base}/a//b", f"{base}/" + "n" * 300]:
            status, body = _raw(mlflow_env, method, path, tok,
                                b"evil" if method == "PUT" else None)
            assert status == 400, (method, path, status, body)
            assert body["error_code"] == "INVALID_PARAMETER_VALUE" and body["hint"], path
    for q in ("../auth", "..%2Fauth", "%2Fetc", "a/../../auth", "x%00y"):
        status, body = _raw(mlflow_env, "GET", f"{ROOT}?path={q}", tokens["viewer"])
        assert status == 400 and body["error_code"] == "INVALID_PARAMETER_VALUE", q
    assert _files_under(store) == before  # nothing written or deleted
    assert (data_dir / secret).read_bytes() == token_file
    assert not [p for p in data_dir.parent.rglob("*") if p.is_file() and p.stat().st_size == 4
                and p.read_bytes() == b"evil"]  # no upload landed anywhere


def test_uploads_over_the_size_limit_are_refused_and_leave_nothing(
        mlflow_env, tokens, data_dir, monkeypatch) -> None:
    from assay.api import mlflow_artifacts

    monkeypatch.setattr(mlflow_artifacts, "MAX_ARTIFACT_BYTES", 10_000)
    mlflow.set_experiment("limits")
    with mlflow.start_run() as run:
        mlflow.log_text("small", "small.txt")
    base = f"{ROOT}/{run.info.experiment_id}/{run.info.run_id}/artifacts"
    tok = tokens["researcher"]
    status, body = _raw(mlflow_env, "PUT", f"{base}/big.bin", tok, b"x" * 20_000)
    assert status == 413 and body["error_code"] == "INVALID_PARAMETER_VALUE"

    def chunked():  # no Content-Length: the limit holds while the body streams
        for _ in range(40):
            yield b"y" * 1000

    conn = http.client.HTTPConnection("127.0.0.1", mlflow_env.port, timeout=30)
    conn.request("PUT", f"{base}/big2.bin", body=chunked(),
                 headers={"Authorization": f"Bearer {tok}"}, encode_chunked=True)
    resp = conn.getresponse()
    assert resp.status == 413 and json.loads(resp.read())["error_code"] == \
        "INVALID_PARAMETER_VALUE"
    conn.close()
    files = data_dir / "mlflow-artifacts"
    assert _files_under(files / "files") == {
        f"{run.info.experiment_id}/{run.info.run_id}/artifacts/small.txt"}
    assert _files_under(files / "tmp") == set()  # the partial uploads are gone
