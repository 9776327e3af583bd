"""MLflow 3's logged models against assay, on loopback, with the official mlflow client:
``mlflow.sklearn.log_model`` and loading it back (``models:/<id>``, ``runs:/<run>/model``,
pyfunc), search/get/tags, run outputs, a restart, ownership and MLflow-style errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.integration

mlflow = pytest.importorskip("mlflow")
sklearn_lm = pytest.importorskip("sklearn.linear_model")
from loopback_server import raw_request as _raw  # tests/ is on sys.path (rootdir conftest)
from mlflow.entities import LoggedModelStatus
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

API = "/api/2.0/mlflow"
ARTIFACTS = "/api/2.0/mlflow-artifacts/artifacts"
X = np.array([[0.0, 1.0], [1.0, 0.0], [2.0, 1.5], [3.0, 0.5], [0.5, 2.5], [2.5, 3.0]])
Y = np.array([0, 0, 1, 1, 0, 1])


def _fit():
    return sklearn_lm.LogisticRegression().fit(X, Y)


def _log(experiment: str = "models"):
    mlflow.set_experiment(experiment)
    model = _fit()
    with mlflow.start_run() as run:
        mlflow.log_param("C", "1.0")
        mlflow.log_metric("acc", 0.75, step=0)
        info = mlflow.sklearn.log_model(model, name="model")
    return model, run, info


def test_log_model_round_trip_search_tags_and_run_outputs(mlflow_env) -> None:
    model, run, info = _log()
    rid, exp_id = run.info.run_id, run.info.experiment_id
    mid = info.model_id
    assert mid.startswith("m-") and info.model_uri == f"models:/{mid}"
    want = model.predict(X)
    assert (mlflow.sklearn.load_model(info.model_uri).predict(X) == want).all()
    assert (mlflow.sklearn.load_model(f"runs:/{rid}/model").predict(X) == want).all()
    assert (mlflow.pyfunc.load_model(info.model_uri).predict(X) == want).all()
    np.testing.assert_allclose(mlflow.sklearn.load_model(info.model_uri).predict_proba(X),
                               model.predict_proba(X))

    got = mlflow.get_logged_model(mid)
    assert got.name == "model" and got.status == LoggedModelStatus.READY
    assert got.source_run_id == rid and got.experiment_id == exp_id
    assert got.artifact_location == f"mlflow-artifacts:/{exp_id}/models/{mid}/artifacts"
    assert got.params == {"C": "1.0"}  # the run's params, as log_model copies them
    assert [(m.key, m.value, m.step, m.run_id) for m in got.metrics] == [("acc", 0.75, 0, rid)]
    # log_model logged the run's step-0 metrics again with the model's id: the run's own
    # history keeps one point, as MLflow's store keeps one row
    c = MlflowClient()
    assert [(m.value, m.step) for m in c.get_metric_history(rid, "acc")] == [(0.75, 0)]
    outs = c.get_run(rid).outputs
    assert [(o.model_id, o.step) for o in outs.model_outputs] == [(mid, 0)]
    files = {f.path for f in c.list_artifacts(rid, "model")}  # runs:/ listing finds the model
    assert {"model/MLmodel", "model/requirements.txt"} <= files

    found = mlflow.search_logged_models(experiment_ids=[exp_id], output_format="list")
    assert [m.model_id for m in found] == [mid]
    assert [m.model_id for m in mlflow.search_logged_models(
        experiment_ids=[exp_id], filter_string="name = 'model' AND params.C = '1.0'",
        output_format="list")] == [mid]
    assert mlflow.search_logged_models(experiment_ids=[exp_id], filter_string="name = 'other'",
                                       output_format="list") == []
    frame = mlflow.search_logged_models(experiment_ids=[exp_id])  # a pandas frame by default
    assert list(frame["model_id"]) == [mid]

    mlflow.set_logged_model_tags(mid, {"stage": "candidate", "team": "vision"})
    assert mlflow.get_logged_model(mid).tags["stage"] == "candidate"
    assert [m.model_id for m in mlflow.search_logged_models(
        experiment_ids=[exp_id], filter_string="tags.stage LIKE 'cand%'",
        output_format="list")] == [mid]
    mlflow.delete_logged_model_tag(mid, "stage")
    tags = mlflow.get_logged_model(mid).tags
    assert "stage" not in tags and tags["team"] == "vision"
    with pytest.raises(MlflowException) as e:
        mlflow.delete_logged_model_tag(mid, "stage")
    assert e.value.error_code == "RESOURCE_DOES_NOT_EXIST"


def test_search_orders_pages_and_deletes(mlflow_env, server, tokens) -> None:
    mlflow.set_experiment("many")
    with mlflow.start_run() as run:
        made = [mlflow.create_external_model(name=f"m{i}", params={"i": str(i)},
                                             model_type="agent" if i % 2 else "baseline")
                for i in range(5)]
    exp_id = run.info.experiment_id
    ids = [m.model_id for m in made]
    assert all(m.source_run_id == run.info.run_id for m in made)
    c = MlflowClient()
    pages, token = [], None
    while True:
        page = c.search_logged_models([exp_id], max_results=2, page_token=token)
        pages.append([m.model_id for m in page])
        token = page.token
        if not token:
            break
    assert [len(p) for p in pages] == [2, 2, 1]
    flat = [i for p in pages for i in p]
    assert sorted(flat) == sorted(ids)  # newest first, ties by id
    by_name = c.search_logged_models([exp_id], order_by=[{"field_name": "name",
                                                          "ascending": False}])
    assert [m.name for m in by_name] == ["m4", "m3", "m2", "m1", "m0"]
    agents = c.search_logged_models([exp_id], filter_string="model_type = 'agent'",
                                    order_by=[{"field_name": "name"}])
    assert [m.name for m in agents] == ["m1", "m3"]
    assert len(c.search_logged_models([exp_id], filter_string="creation_timestamp > 0")) == 5

    c.delete_logged_model(ids[0])
    assert ids[0] not in [m.model_id for m in c.search_logged_models([exp_id])]
    with pytest.raises(MlflowException) as e:
        mlflow.get_logged_model(ids[0])
    assert e.value.error_code == "RESOURCE_DOES_NOT_EXIST"
    status, body = _raw(server, "GET", f"{API}/logged-models/{ids[0]}?allow_deleted=true",
                        tokens["viewer"])
    assert status == 200 and body["model"]["info"]["model_id"] == ids[0]


def test_logged_model_survives_a_server_restart(mlflow_env, data_dir, helpers) -> None:
    model, run, info = _log("restart")
    mlflow_env.stop()
    again = helpers.ThreadServer(data_dir, port=mlflow_env.port).start()
    try:
        got = mlflow.get_logged_model(info.model_id)
        assert got.status == LoggedModelStatus.READY and got.source_run_id == run.info.run_id
        found = mlflow.search_logged_models(experiment_ids=[run.info.experiment_id],
                                            output_format="list")
        assert [m.model_id for m in found] == [info.model_id]
        outs = MlflowClient().get_run(run.info.run_id).outputs
        assert [o.model_id for o in outs.model_outputs] == [info.model_id]
        assert (mlflow.sklearn.load_model(info.model_uri).predict(X) == model.predict(X)).all()
        assert (data_dir / "mlflow" / "models" / f"{info.model_id}.json").is_file()
    finally:
        again.stop()


def test_only_the_owner_or_a_supervisor_writes_a_model_viewers_read(mlflow_env, server,
                                                                     tokens) -> None:
    _, run, info = _log("owned")
    mid, rid, exp_id = info.model_id, run.info.run_id, run.info.experiment_id
    other = tokens["researcher2"]
    art = f"{ARTIFACTS}/{exp_id}/models/{mid}/artifacts"
    refused = [
        ("PATCH", f"{API}/logged-models/{mid}", {"model_id": mid,
                                                 "status": "LOGGED_MODEL_UPLOAD_FAILED"}),
        ("PATCH", f"{API}/logged-models/{mid}/tags", {"tags": [{"key": "k", "value": "v"}]}),
        ("DELETE", f"{API}/logged-models/{mid}/tags/mlflow.user", None),
        ("POST", f"{API}/logged-models/{mid}/params", {"params": [{"key": "p", "value": "1"}]}),
        ("DELETE", f"{API}/logged-models/{mid}", None),
        ("POST", f"{API}/logged-models", {"experiment_id": exp_id, "source_run_id": rid}),
        ("POST", f"{API}/runs/outputs", {"run_id": rid, "models": [{"model_id": mid}]}),
        ("DELETE", f"{art}/MLmodel", None),
    ]
    for method, path, body in refused:
        status, out = _raw(server, method, path, other, body)
        assert status == 403, (method, path, status, out)
        assert out["error_code"] == "PERMISSION_DENIED"
    status, out = _raw(server, "PUT", f"{art}/MLmodel", other, raw=b"not a model")
    assert status == 403 and out["error_code"] == "PERMISSION_DENIED"
    # nothing changed
    got = mlflow.get_logged_model(mid)
    assert got.status == LoggedModelStatus.READY and "k" not in got.tags and "p" not in got.params
    assert (mlflow.sklearn.load_model(info.model_uri).predict(X) == _fit().predict(X)).all()

    viewer = tokens["viewer"]
    status, out = _raw(server, "GET", f"{API}/logged-models/{mid}", viewer)
    assert status == 200 and out["model"]["info"]["status"] == "LOGGED_MODEL_READY"
    status, out = _raw(server, "POST", f"{API}/logged-models/search", viewer,
                       {"experiment_ids": [exp_id]})
    assert status == 200 and [m["info"]["model_id"] for m in out["models"]] == [mid]
    status, out = _raw(server, "GET", f"{art}/MLmodel", viewer)
    assert status == 200 and b"sklearn" in out["raw"]
    status, _ = _raw(server, "PATCH", f"{API}/logged-models/{mid}/tags", viewer,
                     {"tags": [{"key": "k", "value": "v"}]})
    assert status == 403

    # researcher2's own model (no run), and a supervisor may change anyone's
    status, out = _raw(server, "POST", f"{API}/logged-models", other,
                       {"experiment_id": exp_id, "name": "mine"})
    assert status == 200
    theirs = out["model"]["info"]["model_id"]
    status, _ = _raw(server, "PUT", f"{ARTIFACTS}/{exp_id}/models/{theirs}/artifacts/w.bin",
                     other, raw=b"weights")
    assert status == 200
    with pytest.raises(MlflowException) as e:
        mlflow.set_logged_model_tags(theirs, {"k": "v"})  # researcher's client
    assert e.value.error_code == "PERMISSION_DENIED"
    status, _ = _raw(server, "PATCH", f"{API}/logged-models/{mid}/tags", tokens["supervisor"],
                     {"tags": [{"key": "reviewed", "value": "yes"}]})
    assert status == 200 and mlflow.get_logged_model(mid).tags["reviewed"] == "yes"


def test_unknown_models_404_and_bad_input_400(mlflow_env, server, tokens) -> None:
    _, run, info = _log("errors")
    mid, rid, exp_id = info.model_id, run.info.run_id, run.info.experiment_id
    tok = tokens["researcher"]
    with pytest.raises(MlflowException) as e:
        mlflow.get_logged_model("m-" + "0" * 32)
    assert e.value.error_code == "RESOURCE_DOES_NOT_EXIST"
    missing = [
        ("GET", f"{API}/logged-models/m-{'0' * 32}", None),
        ("GET", f"{API}/logged-models/not-a-model-id", None),
        ("PATCH", f"{API}/logged-models/m-{'0' * 32}", {"status": "LOGGED_MODEL_READY"}),
        ("DELETE", f"{API}/logged-models/m-{'0' * 32}", None),
        ("PATCH", f"{API}/logged-models/m-{'0' * 32}/tags", {"tags": []}),
        ("DELETE", f"{API}/logged-models/{mid}/tags/no-such-tag", None),
        ("POST", f"{API}/logged-models", {"experiment_id": "987654"}),
        ("POST", f"{API}/logged-models", {"experiment_id": exp_id, "source_run_id": "nosuchrun"}),
        ("POST", f"{API}/runs/outputs", {"run_id": rid, "models": [{"model_id": "m-x"}]}),
        ("PUT", f"{ARTIFACTS}/0/models/{mid}/artifacts/f.txt", None),  # not its experiment
    ]
    for method, path, body in missing:
        status, out = _raw(server, method, path, tok, body)
        assert status == 404, (method, path, status, out)
        assert out["error_code"] == "RESOURCE_DOES_NOT_EXIST"
    bad = [
        ("POST", f"{API}/logged-models", {"experiment_id": exp_id, "name": "a/b"}),
        ("POST", f"{API}/logged-models", {"experiment_id": exp_id, "name": ""}),
        ("POST", f"{API}/logged-models", {"name": "no-experiment"}),
        ("POST", f"{API}/logged-models", {"experiment_id": exp_id, "tags": [{"key": ""}]}),
        ("PATCH", f"{API}/logged-models/{mid}", {"status": "LOGGED_MODEL_DONE"}),
        ("PATCH", f"{API}/logged-models/{mid}", {"status": 7}),
        ("PATCH", f"{API}/logged-models/{mid}", {}),
        ("PATCH", f"{API}/logged-models/{mid}/tags", {"tags": "k=v"}),
        ("POST", f"{API}/logged-models/search", {}),
        ("POST", f"{API}/logged-models/search", {"experiment_ids": [exp_id],
                                                 "filter": "name == == 'x'"}),
        ("POST", f"{API}/logged-models/search", {"experiment_ids": [exp_id],
                                                 "filter": "attributes.color = 'red'"}),
        ("POST", f"{API}/logged-models/search", {"experiment_ids": [exp_id],
                                                 "order_by": [{"field_name": "params.x"}]}),
        ("POST", f"{API}/logged-models/search", {"experiment_ids": [exp_id],
                                                 "page_token": "bm90IGFuIG9mZnNldA"}),
        ("POST", f"{API}/logged-models/search", {"experiment_ids": [exp_id],
                                                 "max_results": -1}),
        ("POST", f"{API}/runs/outputs", {"run_id": rid}),
        ("PUT", f"{ARTIFACTS}/{exp_id}/models/{mid}/artifacts", None),  # a file, not inside
        ("PUT", f"{ARTIFACTS}/{exp_id}/models/{mid}/MLmodel", None),  # beside artifacts/
    ]
    for method, path, body in bad:
        status, out = _raw(server, method, path, tok, body, raw=b"x" if method == "PUT" else None)
        assert status == 400, (method, path, status, out)
        assert out["error_code"] == "INVALID_PARAMETER_VALUE"
    with pytest.raises(MlflowException) as e:
        mlflow.search_logged_models(experiment_ids=[exp_id], filter_string="name ~ 'x'")
    assert e.value.error_code == "INVALID_PARAMETER_VALUE"
    assert mlflow.get_logged_model(mid).status == LoggedModelStatus.READY  # still


def test_files_in_the_models_directory_stay_plain_files(mlflow_env, data_dir) -> None:
    _, run, info = _log("files")
    stored = (data_dir / "mlflow-artifacts" / "files" / run.info.experiment_id / "models"
              / info.model_id / "artifacts")
    assert (stored / "MLmodel").is_file()
    assert "sklearn" in (stored / "MLmodel").read_text()
    assert not Path(data_dir / "mlflow-artifacts" / "tmp").exists() or not any(
        (data_dir / "mlflow-artifacts" / "tmp").iterdir())
