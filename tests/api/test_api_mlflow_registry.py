"""MLflow's Model Registry against assay, on loopback, with the official mlflow client:
``log_model(registered_model_name=...)``, aliases, ``models:/<name>@<alias>`` and
``models:/<name>/<version>`` loaded through the artifact proxy, search filters and pages,
rename and delete, a restart, ownership, the audit trail and MLflow-style errors."""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

pytestmark = [pytest.mark.integration,  # stages are deprecated in MLflow; still served
              pytest.mark.filterwarnings("ignore:.*Model registry stages:FutureWarning")]

mlflow = pytest.importorskip("mlflow")
sklearn_lm = pytest.importorskip("sklearn.linear_model")
from assay.api.mlflow_registry_state import ModelRegistry, new_model
from assay.errors import ConflictError
from assay.store.audit import AuditTrail
from assay.store.signing import AuditEntry
from loopback_server import raw_request as _raw  # tests/ is on sys.path (rootdir conftest)
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

API = "/api/2.0/mlflow"
X = np.array([[0.0, 1.0], [1.0, 0.0], [2.0, 1.5], [3.0, 0.5], [0.5, 2.5], [2.5, 3.0]])
Y = np.array([0, 0, 1, 1, 0, 1])


def _log(name: str, c: float = 1.0):
    model = sklearn_lm.LogisticRegression(C=c).fit(X, Y)
    with mlflow.start_run() as run:
        info = mlflow.sklearn.log_model(model, name="model", registered_model_name=name,
                                        pip_requirements=["scikit-learn"])  # no inference: fast
    return model, run, info


def _run_with_versions(client: MlflowClient, name: str, n: int, **tags: str) -> str:
    """A registered model with ``n`` versions whose source is a run (no files needed)."""
    with mlflow.start_run() as run:
        pass
    rid = run.info.run_id
    client.create_registered_model(name, tags=tags)
    for _ in range(n):
        client.create_model_version(name, f"runs:/{rid}/model", run_id=rid)
    return rid


def test_log_model_registers_and_loads_by_alias_and_version(mlflow_env, tokens,
                                                            tmp_path) -> None:
    mlflow.set_experiment("registry")
    m1, run1, info1 = _log("iris")
    m2, _, info2 = _log("iris", c=0.01)
    assert (info1.registered_model_version, info2.registered_model_version) == ("1", "2")
    c = MlflowClient()
    v1 = c.get_model_version("iris", "1")
    assert v1.source == info1.model_uri
    status, raw = _raw(mlflow_env, "GET", f"{API}/model-versions/get", tokens["viewer"],
                       query={"name": "iris", "version": "1"})
    assert status == 200 and raw["model_version"]["model_id"] == info1.model_id  # the client
    # drops model_id (MLflow's own TODO), the JSON carries it
    assert v1.run_id == run1.info.run_id and v1.status == "READY"
    assert v1.current_stage == "None"
    exp_id = run1.info.experiment_id
    assert c.get_model_version_download_uri("iris", "1") == \
        f"mlflow-artifacts:/{exp_id}/models/{info1.model_id}/artifacts"
    # the logged model links to its version (MLflow's server and client both write the tag)
    links = json.loads(mlflow.get_logged_model(info1.model_id).tags["mlflow.modelVersions"])
    assert {"name": "iris", "version": "1"} in links

    c.set_registered_model_alias("iris", "champion", "1")
    c.set_registered_model_alias("iris", "challenger", "2")
    assert c.get_model_version_by_alias("iris", "champion").version == "1"
    rm = c.get_registered_model("iris")
    assert rm.aliases == {"champion": "1", "challenger": "2"}
    assert [v.version for v in rm.latest_versions] == ["2"]
    p1, p2 = m1.predict_proba(X), m2.predict_proba(X)
    assert not np.allclose(p1, p2)
    np.testing.assert_allclose(
        mlflow.sklearn.load_model("models:/iris@champion").predict_proba(X), p1)
    np.testing.assert_allclose(
        mlflow.sklearn.load_model("models:/iris@challenger").predict_proba(X), p2)
    assert (mlflow.pyfunc.load_model("models:/iris@champion").predict(X) == m1.predict(X)).all()
    assert (mlflow.pyfunc.load_model("models:/iris/2").predict(X) == m2.predict(X)).all()
    np.testing.assert_allclose(mlflow.sklearn.load_model("models:/iris/latest").predict_proba(X),
                               p2)

    # repointing an alias moves what loads
    c.set_registered_model_alias("iris", "champion", "2")
    np.testing.assert_allclose(
        mlflow.sklearn.load_model("models:/iris@champion").predict_proba(X), p2)
    assert c.get_model_version("iris", "1").aliases == []
    c.delete_registered_model_alias("iris", "challenger")
    with pytest.raises(MlflowException) as e:
        c.get_model_version_by_alias("iris", "challenger")
    assert e.value.error_code == "INVALID_PARAMETER_VALUE"  # as MLflow's SQL store answers

    # register_model from a runs:/ URI resolves to the run's logged model
    v = mlflow.register_model(f"runs:/{run1.info.run_id}/model", "iris-copy")
    assert v.version == "1" and v.source == info1.model_uri
    assert (mlflow.pyfunc.load_model("models:/iris-copy/1").predict(X) == m1.predict(X)).all()
    copied = c.copy_model_version("models:/iris@champion", "iris-copy")
    assert copied.version == "2" and copied.source == "models:/iris/2"
    np.testing.assert_allclose(mlflow.sklearn.load_model("models:/iris-copy/2").predict_proba(X),
                               p2)

    # a version from a run's path, or from a path the artifact proxy serves, loads too
    rid1 = run1.info.run_id
    by_run = c.create_model_version("iris-copy", f"runs:/{rid1}/model", run_id=rid1)
    assert by_run.source == f"runs:/{rid1}/model"  # MLflow 3: the files are the logged model's
    assert c.get_model_version_download_uri("iris-copy", by_run.version) == \
        f"mlflow-artifacts:/{exp_id}/models/{info1.model_id}/artifacts"
    assert (mlflow.pyfunc.load_model(f"models:/iris-copy/{by_run.version}").predict(X) ==
            m1.predict(X)).all()
    art = f"mlflow-artifacts:/{exp_id}/models/{info2.model_id}/artifacts"
    by_uri = c.create_model_version("iris-copy", art, model_id=info2.model_id)
    np.testing.assert_allclose(
        mlflow.sklearn.load_model(f"models:/iris-copy/{by_uri.version}").predict_proba(X), p2)

    # a model directory logged as plain run artifacts (MLflow 2 style) registers and loads
    mlflow.sklearn.save_model(m1, tmp_path / "saved", pip_requirements=["scikit-learn"])
    with mlflow.start_run() as plain:
        mlflow.log_artifacts(str(tmp_path / "saved"), "plain")
    prid = plain.info.run_id
    registered = mlflow.register_model(f"runs:/{prid}/plain", "iris-plain")
    assert registered.source == f"mlflow-artifacts:/{exp_id}/{prid}/artifacts/plain"
    by_path = c.create_model_version("iris-plain", f"runs:/{prid}/plain", run_id=prid)
    assert c.get_model_version_download_uri("iris-plain", by_path.version) == registered.source
    for version in ("1", "2"):
        np.testing.assert_allclose(
            mlflow.sklearn.load_model(f"models:/iris-plain/{version}").predict_proba(X), p1)

    # legacy stages, minimally
    c.transition_model_version_stage("iris", "1", "Production")
    c.transition_model_version_stage("iris", "2", "production", archive_existing_versions=True)
    assert c.get_model_version("iris", "1").current_stage == "Archived"
    assert [v.version for v in c.get_latest_versions("iris", ["Production"])] == ["2"]
    assert sorted(v.version for v in c.get_latest_versions("iris")) == ["1", "2"]
    np.testing.assert_allclose(
        mlflow.sklearn.load_model("models:/iris/Production").predict_proba(X), p2)

    c.update_registered_model("iris", description="logistic regression")
    c.update_model_version("iris", "1", description="first")
    c.set_model_version_tag("iris", "1", "validated", "yes")
    v1 = c.get_model_version("iris", "1")
    assert v1.description == "first" and v1.tags == {"validated": "yes"}
    c.delete_model_version_tag("iris", "1", "validated")
    assert c.get_model_version("iris", "1").tags == {}
    assert c.get_registered_model("iris").description == "logistic regression"


def test_search_filters_order_and_pages(mlflow_env) -> None:
    mlflow.set_experiment("registry-search")
    c = MlflowClient()
    rid_a = _run_with_versions(c, "alpha", 3, team="vision")
    _run_with_versions(c, "Alphabet", 1, team="nlp")
    rid_b = _run_with_versions(c, "beta", 2, team="vision")
    c.set_registered_model_tag("beta", "state", "prod")

    def names(ms) -> list[str]:
        return [m.name for m in ms]

    assert names(c.search_registered_models()) == ["Alphabet", "alpha", "beta"]
    assert names(c.search_registered_models("name LIKE 'alpha%'")) == ["alpha"]
    assert names(c.search_registered_models("name ILIKE 'alpha%'")) == ["Alphabet", "alpha"]
    assert names(c.search_registered_models("name = 'beta'")) == ["beta"]
    assert names(c.search_registered_models("tags.team = 'vision'")) == ["alpha", "beta"]
    assert names(c.search_registered_models(
        "tags.team = 'vision' AND tags.state = 'prod'")) == ["beta"]
    assert names(c.search_registered_models(order_by=["name DESC"])) == \
        ["beta", "alpha", "Alphabet"]
    c.update_registered_model("alpha", "touched")  # alpha is now the latest updated
    assert names(c.search_registered_models(order_by=["last_updated_timestamp DESC"]))[0] == \
        "alpha"
    pages, token = [], None
    while True:
        page = c.search_registered_models(max_results=2, page_token=token)
        pages.append(names(page))
        token = page.token
        if not token:
            break
    assert pages == [["Alphabet", "alpha"], ["beta"]]

    def versions(*args, **kw) -> list[tuple[str, str]]:
        return [(v.name, v.version) for v in c.search_model_versions(*args, **kw)]

    assert versions("name = 'alpha'", order_by=["version_number ASC"]) == \
        [("alpha", "1"), ("alpha", "2"), ("alpha", "3")]
    assert versions(f"run_id = '{rid_b}'", order_by=["version_number DESC"]) == \
        [("beta", "2"), ("beta", "1")]
    assert sorted(versions(f"run_id IN ('{rid_a}', '{rid_b}')")) == sorted(
        [("alpha", "1"), ("alpha", "2"), ("alpha", "3"), ("beta", "1"), ("beta", "2")])
    c.set_model_version_tag("alpha", "2", "validated", "yes")
    assert versions("tags.validated = 'yes'") == [("alpha", "2")]
    assert versions("name = 'alpha' AND version_number >= 2",
                    order_by=["version_number ASC"]) == [("alpha", "2"), ("alpha", "3")]
    assert len(versions()) == 6
    got, token = [], None
    while True:
        page = c.search_model_versions("name = 'alpha'", max_results=2, page_token=token,
                                       order_by=["version_number DESC"])
        got.append([v.version for v in page])
        token = page.token
        if not token:
            break
    assert got == [["3", "2"], ["1"]]


def test_rename_and_delete_keep_versions_aliases_and_survive_a_restart(
        mlflow_env, data_dir, helpers, server, tokens) -> None:
    mlflow.set_experiment("registry-rename")
    model, _, info = _log("draft")
    c = MlflowClient()
    c.create_model_version("draft", info.model_uri, model_id=info.model_id)  # version 2
    c.set_registered_model_alias("draft", "prod", "1")
    c.set_registered_model_tag("draft", "owner-team", "vision")
    c.rename_registered_model("draft", "final")
    with pytest.raises(MlflowException) as e:
        c.get_registered_model("draft")
    assert e.value.error_code == "RESOURCE_DOES_NOT_EXIST"
    rm = c.get_registered_model("final")
    assert rm.aliases == {"prod": "1"} and rm.tags == {"owner-team": "vision"}
    assert [(v.name, v.version) for v in c.search_model_versions("name = 'final'",
                                                                 order_by=["version_number"])] \
        == [("final", "1"), ("final", "2")]
    assert c.search_model_versions("name = 'draft'") == []
    assert (mlflow.pyfunc.load_model("models:/final@prod").predict(X) == model.predict(X)).all()

    c.delete_model_version("final", "1")  # its alias goes with it; numbers are not reused
    assert c.get_registered_model("final").aliases == {}
    with pytest.raises(MlflowException) as e:
        c.get_model_version("final", "1")
    assert e.value.error_code == "RESOURCE_DOES_NOT_EXIST"
    assert c.create_model_version("final", info.model_uri).version == "3"

    # everything is on disk: a new server process reads the same registry
    server.stop()
    again = helpers.ThreadServer(data_dir, port=server.port).start()
    try:
        rm = c.get_registered_model("final")
        assert [v.version for v in c.search_model_versions("name = 'final'",
                                                           order_by=["version_number"])] \
            == ["2", "3"]
        assert rm.tags == {"owner-team": "vision"}
        assert (mlflow.pyfunc.load_model("models:/final/3").predict(X) ==
                model.predict(X)).all()
        files = list((data_dir / "mlflow" / "registry").iterdir())
        assert [f.suffix for f in files] == [".json"]  # one file, no temporary left
        c.delete_registered_model("final")
        with pytest.raises(MlflowException) as e:
            c.get_model_version("final", "2")
        assert e.value.error_code == "RESOURCE_DOES_NOT_EXIST"
        assert not list((data_dir / "mlflow" / "registry").iterdir())
        # the logged model and its files stay
        assert (mlflow.sklearn.load_model(info.model_uri).predict(X) == model.predict(X)).all()
        assert c.create_registered_model("final").name == "final"
        with mlflow.start_run() as run:
            pass
        rid = run.info.run_id
        assert c.create_model_version("final", f"runs:/{rid}/m", run_id=rid).version == "1"
    finally:
        again.stop()


def test_viewers_read_only_owners_and_supervisors_write(mlflow_env, server, tokens,
                                                        data_dir) -> None:
    mlflow.set_experiment("registry-owned")
    c = MlflowClient()
    rid = _run_with_versions(c, "mine", 2)
    c.set_registered_model_alias("mine", "prod", "1")
    c.set_registered_model_tag("mine", "k", "v")
    other, viewer = tokens["researcher2"], tokens["viewer"]
    refused = [
        ("POST", "registered-models/rename", {"name": "mine", "new_name": "theirs"}),
        ("PATCH", "registered-models/update", {"name": "mine", "description": "x"}),
        ("DELETE", "registered-models/delete", {"name": "mine"}),
        ("POST", "registered-models/set-tag", {"name": "mine", "key": "k", "value": "w"}),
        ("DELETE", "registered-models/delete-tag", {"name": "mine", "key": "k"}),
        ("POST", "registered-models/alias", {"name": "mine", "alias": "prod", "version": "2"}),
        ("DELETE", "registered-models/alias", {"name": "mine", "alias": "prod"}),
        ("POST", "model-versions/create", {"name": "mine", "source": f"runs:/{rid}/x",
                                           "run_id": rid}),
        ("PATCH", "model-versions/update", {"name": "mine", "version": "1",
                                            "description": "x"}),
        ("DELETE", "model-versions/delete", {"name": "mine", "version": "1"}),
        ("POST", "model-versions/set-tag", {"name": "mine", "version": "1", "key": "k",
                                            "value": "v"}),
        ("DELETE", "model-versions/delete-tag", {"name": "mine", "version": "1", "key": "k"}),
        ("POST", "model-versions/transition-stage", {"name": "mine", "version": "1",
                                                     "stage": "Production"}),
    ]
    for token in (other, viewer):
        for method, path, body in refused:
            status, out = _raw(server, method, f"{API}/{path}", token, body)
            assert status == 403, (method, path, status, out)
            assert out["error_code"] == "PERMISSION_DENIED"
    status, out = _raw(server, "POST", f"{API}/registered-models/create", viewer,
                       {"name": "viewers"})
    assert status == 403 and out["error_code"] == "PERMISSION_DENIED"
    # nothing changed, and viewers read
    rm = c.get_registered_model("mine")
    assert rm.aliases == {"prod": "1"} and rm.tags == {"k": "v"} and not rm.description
    status, out = _raw(server, "GET", f"{API}/registered-models/alias", viewer,
                       query={"name": "mine", "alias": "prod"})
    assert status == 200 and out["model_version"]["version"] == "1"
    status, out = _raw(server, "GET", f"{API}/model-versions/search", viewer,
                       query={"filter": "name = 'mine'"})
    assert status == 200 and len(out["model_versions"]) == 2
    assert c.get_model_version("mine", "1").current_stage == "None"

    # researcher2 owns what it creates; a supervisor may change anyone's
    status, _ = _raw(server, "POST", f"{API}/registered-models/create", other, {"name": "r2"})
    assert status == 200
    with pytest.raises(MlflowException) as e:
        c.set_registered_model_tag("r2", "k", "v")  # the researcher's client
    assert e.value.error_code == "PERMISSION_DENIED"
    status, _ = _raw(server, "POST", f"{API}/registered-models/alias", tokens["supervisor"],
                     {"name": "mine", "alias": "prod", "version": "2"})
    assert status == 200 and c.get_model_version_by_alias("mine", "prod").version == "2"

    entries = [AuditEntry.from_record(r) for r in AuditTrail(data_dir).records()
               if r.kind == "audit"]
    registry = [(a.actor, a.action, a.target) for a in entries
                if "registered_model" in a.action or "model_version" in a.action]
    assert ("researcher", "mlflow_create_registered_model", "mine") in registry
    assert ("researcher", "mlflow_set_registered_model_alias", "mine") in registry
    assert ("supervisor", "mlflow_set_registered_model_alias", "mine") in registry
    assert sum(a[1] == "mlflow_create_model_version" for a in registry) == 2
    assert not any(a[0] in ("researcher2", "viewer") and a[2] == "mine" for a in registry)


def test_bad_input_gets_mlflow_errors_and_changes_nothing(mlflow_env, server, tokens) -> None:
    mlflow.set_experiment("registry-errors")
    c = MlflowClient()
    rid = _run_with_versions(c, "kept", 1, team="a")
    c.set_registered_model_alias("kept", "prod", "1")
    with pytest.raises(MlflowException) as e:
        c.create_registered_model("kept")
    assert e.value.error_code == "RESOURCE_ALREADY_EXISTS"
    _run_with_versions(c, "other", 0)
    with pytest.raises(MlflowException) as e:
        c.rename_registered_model("other", "kept")
    assert e.value.error_code == "RESOURCE_ALREADY_EXISTS"
    with pytest.raises(MlflowException) as e:
        c.set_registered_model_alias("kept", "latest", "1")
    assert e.value.error_code == "INVALID_PARAMETER_VALUE"
    with pytest.raises(MlflowException) as e:
        c.search_registered_models("name ~ 'x'")
    assert e.value.error_code == "INVALID_PARAMETER_VALUE"

    tok = tokens["researcher"]
    missing = [
        ("GET", "registered-models/get", None, {"name": "nope"}),
        ("POST", "registered-models/rename", {"name": "nope", "new_name": "x"}, None),
        ("DELETE", "registered-models/delete", {"name": "nope"}, None),
        ("POST", "registered-models/set-tag", {"name": "nope", "key": "k", "value": "v"}, None),
        ("POST", "registered-models/alias", {"name": "kept", "alias": "a", "version": "9"}, None),
        ("GET", "registered-models/alias", None, {"name": "nope", "alias": "prod"}),
        ("GET", "model-versions/get", None, {"name": "kept", "version": "9"}),
        ("GET", "model-versions/get-download-uri", None, {"name": "kept", "version": "9"}),
        ("DELETE", "model-versions/delete", {"name": "kept", "version": "9"}, None),
        ("POST", "model-versions/create", {"name": "nope", "source": f"runs:/{rid}/m"}, None),
        ("POST", "registered-models/get-latest-versions", {"name": "nope"}, None),
    ]
    for method, path, body, query in missing:
        status, out = _raw(server, method, f"{API}/{path}", tok, body, query=query)
        assert status == 404, (method, path, status, out)
        assert out["error_code"] == "RESOURCE_DOES_NOT_EXIST"
    bad = [
        ("POST", "registered-models/create", {"name": ""}),
        ("POST", "registered-models/create", {"name": "a/b"}),
        ("POST", "registered-models/create", {"name": "a:b"}),
        ("POST", "registered-models/create", {}),
        ("POST", "registered-models/create", {"name": "t", "tags": [{"key": "../x"}]}),
        ("POST", "registered-models/rename", {"name": "kept", "new_name": ""}),
        ("POST", "registered-models/set-tag", {"name": "kept", "key": "", "value": "v"}),
        ("POST", "registered-models/alias", {"name": "kept", "alias": "v3", "version": "1"}),
        ("POST", "registered-models/alias", {"name": "kept", "alias": "a b", "version": "1"}),
        ("POST", "registered-models/alias", {"name": "kept", "alias": "a", "version": "one"}),
        ("POST", "model-versions/create", {"name": "kept", "source": "/etc/passwd"}),
        ("POST", "model-versions/create", {"name": "kept", "source": "file:///etc"}),
        ("POST", "model-versions/create", {"name": "kept", "source": "s3://bucket/m"}),
        ("POST", "model-versions/create", {"name": "kept", "source": "runs:/nosuchrun/m"}),
        ("POST", "model-versions/create", {"name": "kept", "source": f"runs:/{rid}/m",
                                           "run_id": "another"}),
        ("POST", "model-versions/create", {"name": "kept", "source": f"runs:/{rid}/../../x"}),
        ("POST", "model-versions/create", {"name": "kept", "source": "models:/m-" + "0" * 32}),
        ("POST", "model-versions/create", {"name": "kept", "source": "models:/nope/1"}),
        ("POST", "model-versions/create", {"name": "kept",
                                           "source": f"mlflow-artifacts:/0/{rid}/artifacts/m"}),
        ("POST", "model-versions/create", {"name": "kept", "source": f"runs:/{rid}/m",
                                           "tags": [{"key": "", "value": "x"}]}),
        ("POST", "model-versions/transition-stage", {"name": "kept", "version": "1",
                                                     "stage": "Gold"}),
        ("POST", "model-versions/transition-stage", {"name": "kept", "version": "1",
                                                     "stage": "Archived",
                                                     "archive_existing_versions": True}),
        ("PATCH", "model-versions/update", {"name": "kept", "version": "x"}),
    ]
    for method, path, body in bad:
        status, out = _raw(server, method, f"{API}/{path}", tok, body)
        assert status == 400, (method, path, status, out)
        assert out["error_code"] == "INVALID_PARAMETER_VALUE"
    bad_queries = [
        ("registered-models/search", {"filter": "metrics.acc > 1"}),
        ("registered-models/search", {"filter": "tags.k IN ('a')"}),
        ("registered-models/search", {"filter": "name ="}),
        ("registered-models/search", {"order_by": "color DESC"}),
        ("registered-models/search", {"order_by": ["name", "name DESC"]}),
        ("registered-models/search", {"max_results": "1001"}),
        ("registered-models/search", {"max_results": "0"}),
        ("registered-models/search", {"page_token": "bm90IGFuIG9mZnNldA"}),
        ("model-versions/search", {"filter": "params.x = '1'"}),
        ("model-versions/search", {"filter": "version_number LIKE '1%'"}),
        ("model-versions/search", {"order_by": "run_id"}),
        ("model-versions/get", {"name": "kept", "version": "latest"}),
        ("registered-models/alias", {"name": "kept", "alias": "bad alias"}),
        ("registered-models/get", {}),
    ]
    for path, query in bad_queries:
        status, out = _raw(server, "GET", f"{API}/{path}", tok, query=query)
        assert status == 400, (path, query, status, out)
        assert out["error_code"] == "INVALID_PARAMETER_VALUE"
    # all of it refused: what was stored is as it was
    rm = c.get_registered_model("kept")
    assert rm.aliases == {"prod": "1"} and rm.tags == {"team": "a"}
    assert [(v.version, v.current_stage) for v in c.search_model_versions("name = 'kept'")] \
        == [("1", "None")]
    assert sorted(m.name for m in c.search_registered_models()) == ["kept", "other"]


def test_concurrent_creates_get_distinct_version_numbers(mlflow_env, server, tokens) -> None:
    mlflow.set_experiment("registry-busy")
    rid = _run_with_versions(MlflowClient(), "busy", 0)
    body = {"name": "busy", "source": f"runs:/{rid}/m", "run_id": rid}
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda _: _raw(server, "POST", f"{API}/model-versions/create",
                                               tokens["researcher"], body), range(16)))
    assert [s for s, _ in results] == [200] * 16
    assert sorted(int(o["model_version"]["version"]) for _, o in results) == list(range(1, 17))
    assert len(MlflowClient().search_model_versions("name = 'busy'")) == 16


def test_registry_records_are_whole_files_and_crash_leftovers_are_ignored(tmp_path) -> None:
    reg = ModelRegistry(tmp_path)
    reg.add(new_model("a", owner="alice"))
    leftover = tmp_path / "registry" / ".half-written.json"  # what a crash mid-write leaves
    leftover.write_text('{"name": "a", "trunc')
    reg.update("a", lambda m: m.update(name="b"))  # a rename replaces the one file
    with pytest.raises(ConflictError):
        reg.add(new_model("b", owner="bob"))

    def refuse(m: dict) -> None:
        m["tags"]["k"] = "v"
        raise ValueError("refused")

    with pytest.raises(ValueError):
        reg.update("b", refuse)
    again = ModelRegistry(tmp_path)  # a restarted server reads the same
    assert again.get("a") is None and again.get("b")["owner"] == "alice"
    assert again.get("b")["tags"] == {}  # the refused change stored nothing
    assert [p.name for p in (tmp_path / "registry").glob("[!.]*.json")] == \
        [f"{again.get('b')['id']}.json"]


def test_a_registered_model_is_one_plain_json_file(mlflow_env, data_dir: Path) -> None:
    c = MlflowClient()
    c.create_registered_model("plain", description="no versions")
    stored = list((data_dir / "mlflow" / "registry").glob("*.json"))
    assert len(stored) == 1
    record = json.loads(stored[0].read_text())
    assert record["name"] == "plain" and record["owner"] == "researcher"
    assert record["description"] == "no versions" and record["versions"] == {}


def test_another_researcher_can_register_your_logged_model(mlflow_env, tokens,
                                                          monkeypatch) -> None:
    """Registering someone else's logged model made the version, then the client's own
    copy of the ``mlflow.modelVersions`` tag was refused: register_model raised after the
    version existed. A tag write that changes nothing is now accepted from anyone."""
    mlflow.set_experiment("shared")
    model = sklearn_lm.LogisticRegression().fit(X, Y)
    with mlflow.start_run():
        info = mlflow.sklearn.log_model(model, name="model", pip_requirements=["scikit-learn"])
    monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", tokens["researcher2"])
    mv = mlflow.register_model(info.model_uri, "team-model")
    assert mv.version == "1"
    links = json.loads(mlflow.get_logged_model(info.model_id).tags["mlflow.modelVersions"])
    assert {"name": "team-model", "version": "1"} in links
    # A tag that would change the model is still the owner's.
    with pytest.raises(MlflowException, match="belongs to"):
        MlflowClient().set_logged_model_tags(info.model_id, {"stage": "mine now"})


def test_version_number_and_timestamps_compare_as_numbers_quoted_or_not(mlflow_env) -> None:
    """``version_number >= '2'`` compared text ('10' < '2') and ``> 'a'`` answered an empty
    page; MLflow converts the value with int() and refuses what is not a number."""
    mlflow.set_experiment("registry-numbers")
    c = MlflowClient()
    _run_with_versions(c, "vn", 12)

    def numbers(f: str) -> list[int]:
        return sorted(int(v.version) for v in c.search_model_versions(f"name = 'vn' AND {f}"))

    assert numbers("version_number >= '2'") == list(range(2, 13))
    assert numbers("version_number >= 2") == list(range(2, 13))
    assert numbers("version_number < '10'") == list(range(1, 10))
    assert numbers("version_number = '11'") == [11]
    first = c.get_model_version("vn", "1").creation_timestamp
    assert numbers(f"creation_timestamp >= '{first}'") == list(range(1, 13))
    created = c.get_registered_model("vn").creation_timestamp
    assert [m.name for m in c.search_registered_models(
        f"creation_timestamp >= '{created}'")] == ["vn"]
    assert c.search_registered_models(f"creation_timestamp > '{created + 10**6}'") == []
    for bad in ["version_number > 'a'", "version_number = 2.5", "version_number = '2.0'",
                "last_updated_timestamp < 'yesterday'"]:
        with pytest.raises(MlflowException, match="Invalid value for numeric attribute") as e:
            c.search_model_versions(f"name = 'vn' AND {bad}")
        assert e.value.error_code == "INVALID_PARAMETER_VALUE"
    with pytest.raises(MlflowException, match="Invalid value for numeric attribute") as e:
        c.search_registered_models("last_updated_timestamp >= 'x'")
    assert e.value.error_code == "INVALID_PARAMETER_VALUE"


def test_tag_and_alias_writes_leave_last_updated_alone(mlflow_env) -> None:
    """As MLflow's SQL store: only create, update, transition, rename and version deletes
    move ``last_updated_timestamp``; a tag or an alias does not reorder searches."""
    mlflow.set_experiment("registry-touch")
    c = MlflowClient()
    rid = _run_with_versions(c, "a", 1)
    time.sleep(0.01)
    c.create_model_version("a", f"runs:/{rid}/model", run_id=rid)
    _run_with_versions(c, "b", 1)
    time.sleep(0.01)
    v1, rm = c.get_model_version("a", "1"), c.get_registered_model("a")
    c.set_model_version_tag("a", "1", "validated", "true")
    c.delete_model_version_tag("a", "1", "validated")
    c.set_registered_model_tag("a", "team", "x")
    c.delete_registered_model_tag("a", "team")
    c.set_registered_model_alias("a", "champion", "1")
    c.delete_registered_model_alias("a", "champion")
    assert c.get_model_version("a", "1").last_updated_timestamp == v1.last_updated_timestamp
    assert c.get_registered_model("a").last_updated_timestamp == rm.last_updated_timestamp
    assert c.search_model_versions("name='a'")[0].version == "2"
    assert [m.name for m in c.search_registered_models(order_by=["timestamp DESC"])] == \
        ["b", "a"]
    time.sleep(0.01)
    c.update_model_version("a", "1", "described")  # the version only, as MLflow
    assert c.get_model_version("a", "1").last_updated_timestamp > v1.last_updated_timestamp
    assert c.get_registered_model("a").last_updated_timestamp == rm.last_updated_timestamp
    time.sleep(0.01)
    moved = c.transition_model_version_stage("a", "2", "Staging")  # both
    assert c.get_registered_model("a").last_updated_timestamp == \
        moved.last_updated_timestamp > rm.last_updated_timestamp


def test_copy_model_version_from_names_with_hash_at_and_backslash(mlflow_env, server,
                                                                  tokens) -> None:
    """The source ``models:/<name>/<version>`` was read with urlparse's fragment, the first
    ``@`` and a backslash check; it is now parsed as MLflow's ``_parse_model_uri``."""
    mlflow.set_experiment("registry-copy-names")
    c = MlflowClient()
    for i, name in enumerate(["churn #2", "team@prod", "fraud\\v2"], start=1):
        _run_with_versions(c, name, 1)
        copied = c.copy_model_version(f"models:/{name}/1", "dst")
        assert (copied.version, copied.source) == (str(i), f"models:/{name}/1")
    c.set_registered_model_alias("team@prod", "champ", "1")
    by_alias = c.copy_model_version("models:/team@prod@champ", "dst")  # the last '@'
    assert by_alias.source == "models:/team@prod/1"
    # a refused source stores nothing: the next version is still the next number
    for bad, why in [("models:/churn #2/1/x", "Not a proper models:/ URI"),
                     ("models:/team@prod@", "Not a proper models:/ URI"),
                     ("models:/nope/1", "no registered model")]:
        status, out = _raw(server, "POST", f"{API}/model-versions/create", tokens["researcher"],
                           {"name": "dst", "source": bad})
        assert status == 400 and why in out["message"], (bad, out)
    assert c.create_model_version("dst", "models:/churn #2/1").version == "5"


def test_prompts_register_and_load_and_stay_out_of_model_searches(mlflow_env, server,
                                                                  tokens) -> None:
    """MLflow 3's prompt registry rides on these routes: a prompt version's source is the
    client's placeholder (its template is a tag; it has no files)."""
    p = mlflow.genai.register_prompt(name="greeting", template="Hello {{name}}")
    assert p.version == 1
    assert mlflow.genai.load_prompt("prompts:/greeting/1").template == "Hello {{name}}"
    p2 = mlflow.genai.register_prompt(name="greeting", template="Hi {{name}}")
    assert mlflow.genai.load_prompt(f"prompts:/greeting/{p2.version}").template == "Hi {{name}}"
    c = MlflowClient()
    assert c.search_registered_models() == [] and c.search_model_versions() == []
    status, out = _raw(server, "POST", f"{API}/model-versions/create", tokens["researcher"],
                       {"name": "greeting", "source": "runs:/x/y",
                        "tags": [{"key": "mlflow.prompt.is_prompt", "value": "true"}]})
    assert status == 400 and "Invalid prompt source" in out["message"]
    status, out = _raw(server, "POST", f"{API}/model-versions/create", tokens["researcher"],
                       {"name": "greeting", "source": "dummy-source"})
    assert status == 400  # not a prompt: a source this server cannot serve


def test_reads_share_one_snapshot_and_never_wait_for_a_write(tmp_path) -> None:
    """Searches copied the whole registry and alias lookups the whole model, under the lock
    writes hold while they store a file: reads now share immutable records, lock-free."""
    reg = ModelRegistry(tmp_path)
    reg.add(new_model("a", owner="alice"))
    before = reg.get("a")
    assert reg.get("a") is before and reg.all()[0] is before  # no copies
    entered, release = threading.Event(), threading.Event()

    def slow(m: dict) -> None:
        m["tags"]["k"] = "v"
        entered.set()
        release.wait(10)

    writer = threading.Thread(target=reg.update, args=("a", slow))
    writer.start()
    try:
        assert entered.wait(10)
        t0 = time.monotonic()
        seen, listed = reg.get("a"), reg.all()
        assert time.monotonic() - t0 < 1  # did not wait for the write
        assert seen is before and listed == [before] and before["tags"] == {}
    finally:
        release.set()
        writer.join(10)
    after = reg.get("a")
    assert after is not before and after["tags"] == {"k": "v"} and before["tags"] == {}
