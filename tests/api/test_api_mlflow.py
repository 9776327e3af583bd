"""The official mlflow client against assay's MLflow protocol, on loopback."""

from __future__ import annotations

import math

import pytest
from assay.sdk.api import Api

pytestmark = pytest.mark.integration

mlflow = pytest.importorskip("mlflow")
from mlflow.entities import Metric, Param, RunTag
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient


def test_mlflow_client_logs_a_run_and_reads_it_back(mlflow_env, data_dir, client, helpers) -> None:
    c = MlflowClient()
    exp_id = c.create_experiment("vision/resnet sweep")
    assert c.get_experiment_by_name("vision/resnet sweep").experiment_id == exp_id
    run = c.create_run(exp_id, run_name="baseline", tags={"team": "vision"})
    rid = run.info.run_id
    c.log_param(rid, "lr", "0.01")
    c.log_batch(rid, params=[Param("depth", "4")], tags=[RunTag("stage", "dev")],
                metrics=[Metric("loss", 1.0 / (s + 1), 1_700_000_000_000 + s, s) for s in range(50)])
    for s in range(50, 60):
        c.log_metric(rid, "loss", 1.0 / (s + 1), step=s)
    c.log_metric(rid, "weird", math.nan, step=0)
    c.set_tag(rid, "note", "hello")

    got = c.get_run(rid)  # read-your-writes, before ingestion
    assert got.data.params == {"lr": "0.01", "depth": "4"}
    assert got.data.tags["team"] == "vision" and got.data.tags["note"] == "hello"
    assert got.data.metrics["loss"] == pytest.approx(1 / 60)
    hist = c.get_metric_history(rid, "loss")
    assert [m.step for m in hist] == list(range(60))
    assert hist[3].timestamp == 1_700_000_000_003 and hist[3].value == pytest.approx(0.25)
    assert math.isnan(c.get_metric_history(rid, "weird")[0].value)

    found = c.search_runs([exp_id], filter_string="params.lr = '0.01' and metrics.loss < 0.5")
    assert [r.info.run_id for r in found] == [rid]
    assert c.search_runs([exp_id], filter_string="metrics.loss > 0.5") == []
    c.set_terminated(rid)
    assert c.get_run(rid).info.status == "FINISHED"

    # ... and it is an ordinary assay run
    project = c.get_experiment(exp_id).name.replace("/", "-").replace(" ", "-")
    api = Api(data_dir)
    rec = helpers.wait_for(lambda: (r := api.store.get_run(rid)) and r.status == "completed" and r)
    assert rec.project == project and rec.config == {"lr": "0.01", "depth": "4"}
    assert rec.env["mlflow_tags"]["note"] == "hello"
    df = api.history(rid, "loss")
    assert df["step"].to_list() == list(range(60))
    assert api.runs(project=project)["run_id"].to_list() == [rid]
    assert client("viewer").get(f"/api/runs/{rid}").json()["status"] == "completed"


def test_mlflow_fluent_api_works_unchanged(mlflow_env, data_dir, helpers) -> None:
    mlflow.set_experiment("fluent")
    with mlflow.start_run(run_name="fluent-run") as active:
        mlflow.log_params({"optimizer": "adam", "epochs": 3})
        for step in range(3):
            mlflow.log_metric("acc", 0.5 + step / 10, step=step)
        mlflow.set_tag("kind", "demo")
    rid = active.info.run_id
    run = MlflowClient().get_run(rid)
    assert run.info.status == "FINISHED" and run.info.run_name == "fluent-run"
    assert run.data.params == {"optimizer": "adam", "epochs": "3"}
    assert run.data.metrics["acc"] == pytest.approx(0.7)
    rec = helpers.wait_for(lambda: (r := Api(data_dir).store.get_run(rid)) and
                           r.status == "completed" and r)
    assert rec.project == "fluent" and rec.summary["acc"]["last"] == pytest.approx(0.7)


def test_assay_runs_show_up_as_mlflow_runs(mlflow_env, data_dir, helpers) -> None:
    import assay

    with assay.init(project="native", config={"lr": 0.1}, dir=data_dir,
                    system_metrics_interval=None, capture=False) as run:
        run.log({"acc": 0.9}, step=0)
    c = MlflowClient()
    exp = helpers.wait_for(lambda: c.get_experiment_by_name("native"))
    runs = c.search_runs([exp.experiment_id])
    assert [r.info.run_id for r in runs] == [run.id]
    assert runs[0].data.params == {"lr": "0.1"} and runs[0].data.metrics["acc"] == 0.9
    assert runs[0].info.status == "FINISHED"


def test_mlflow_errors_map_to_mlflow_error_codes(mlflow_env, tokens, monkeypatch) -> None:
    c = MlflowClient()
    with pytest.raises(MlflowException) as e:
        c.get_run("0123456789abcdef0123456789abcdef")
    assert e.value.error_code == "RESOURCE_DOES_NOT_EXIST"
    assert c.get_experiment_by_name("no such experiment") is None
    exp = c.create_experiment("errs")
    with pytest.raises(MlflowException) as e:
        c.create_experiment("errs")
    assert e.value.error_code == "RESOURCE_ALREADY_EXISTS"
    rid = c.create_run(exp).info.run_id
    c.log_param(rid, "a", "1")
    with pytest.raises(MlflowException) as e:
        c.log_param(rid, "a", "2")
    assert e.value.error_code == "INVALID_PARAMETER_VALUE"
    with pytest.raises(MlflowException) as e:
        c.search_runs([exp], filter_string="metrics.x >>> 3")
    assert e.value.error_code == "INVALID_PARAMETER_VALUE"
    monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", tokens["viewer"])
    with pytest.raises(MlflowException) as e:
        MlflowClient().create_run(exp)
    assert e.value.error_code == "PERMISSION_DENIED"
    monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", tokens["researcher2"])
    with pytest.raises(MlflowException) as e:
        MlflowClient().log_param(rid, "b", "1")
    assert e.value.error_code == "PERMISSION_DENIED"
    monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", "asy_wrongwrong_" + "x" * 40)
    with pytest.raises(MlflowException) as e:
        MlflowClient().get_run(rid)
    assert e.value.error_code == "UNAUTHENTICATED"


def test_mlflow_delete_and_restore_hide_runs_from_search(mlflow_env) -> None:
    c = MlflowClient()
    exp = c.create_experiment("lifecycle")
    keep, drop = c.create_run(exp).info.run_id, c.create_run(exp).info.run_id
    c.delete_run(drop)
    assert {r.info.run_id for r in c.search_runs([exp])} == {keep}
    from mlflow.entities import ViewType

    assert {r.info.run_id for r in c.search_runs([exp], run_view_type=ViewType.ALL)} == {keep, drop}
    c.restore_run(drop)
    assert {r.info.run_id for r in c.search_runs([exp], order_by=["attributes.start_time ASC"])} == {keep, drop}


def test_researchers_rename_and_tag_only_their_own_experiments(mlflow_env, tokens,
                                                               monkeypatch) -> None:
    exp = MlflowClient().create_experiment("alice-exp")
    MlflowClient().set_experiment_tag(exp, "owner-note", "mine")  # its creator may
    monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", tokens["researcher2"])
    for change in (lambda c: c.rename_experiment(exp, "pwned"),
                   lambda c: c.set_experiment_tag(exp, "k", "v")):
        with pytest.raises(MlflowException) as e:
            change(MlflowClient())
        assert e.value.error_code == "PERMISSION_DENIED"
    got = MlflowClient().get_experiment(exp)
    assert got.name == "alice-exp" and got.tags == {"owner-note": "mine"}
    monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", tokens["supervisor"])
    MlflowClient().rename_experiment(exp, "alice-exp-2")  # a supervisor may
    assert MlflowClient().get_experiment(exp).name == "alice-exp-2"


def test_mlflow_steps_take_the_sdks_int64_range(mlflow_env) -> None:
    """Steps past 2**62 (nanosecond counters) are stored as the SDK stores them; the int64
    maximum, which the store cannot hold as a step, is refused with a reason."""
    c = MlflowClient()
    rid = c.create_run(c.create_experiment("big steps")).info.run_id
    big = 2**62 + 5
    c.log_metric(rid, "loss", 0.5, step=big)
    assert [m.step for m in c.get_metric_history(rid, "loss")] == [big]
    with pytest.raises(MlflowException, match="step"):
        c.log_metric(rid, "loss", 0.5, step=2**63 - 1)


def _wait_ingested(helpers, data_dir, rid, key, value):
    """Wait until the run's last logged ``key`` point (assay's summary) has ``value``."""
    api = Api(data_dir)
    helpers.wait_for(lambda: (r := api.store.get_run(rid)) is not None
                     and r.summary.get(key, {}).get("last") == value)


def test_mlflow_latest_metric_is_mlflows_not_the_last_logged(mlflow_env, data_dir,
                                                           helpers) -> None:
    """data.metrics, filters and order_by take MLflow's latest value (highest step, then
    timestamp, then value, NaN ranking as 0), before and after ingestion, and follow points
    ingested after a first read."""
    c = MlflowClient()
    exp = c.create_experiment("latest")
    rid = c.create_run(exp, run_name="r").info.run_id
    other = c.create_run(exp, run_name="o").info.run_id
    c.log_batch(rid, metrics=[
        Metric("m", 1.0, 1000, 10), Metric("m", 2.0, 2000, 3),  # later, lower step
        Metric("t", 5.0, 3000, 0), Metric("t", 6.0, 1000, 0),  # same step, older
        Metric("v", 4.0, 100, 1), Metric("v", 3.0, 100, 1),  # full tie but the value
        Metric("n", math.nan, 100, 2), Metric("n", -1.0, 100, 2)])  # NaN ranks as 0
    c.log_metric(other, "m", 1.5, step=0)
    want = {"m": 1.0, "t": 5.0, "v": 4.0}

    def check() -> None:
        got = c.get_run(rid).data.metrics
        assert math.isnan(got.pop("n")) and got == want
        names = lambda rs: [r.info.run_name for r in rs]
        assert names(c.search_runs([exp], "metrics.m < 1.2")) == ["r"]
        assert names(c.search_runs([exp], "metrics.t = 5")) == ["r"]
        assert names(c.search_runs([exp], "metrics.n != 0")) == ["r"]  # NaN satisfies !=
        assert names(c.search_runs([exp], order_by=["metrics.m ASC"])) == ["r", "o"]

    check()  # read-your-writes: the points are not ingested yet
    _wait_ingested(helpers, data_dir, rid, "n", -1.0)
    helpers.wait_for(lambda: Api(data_dir).store.get_run(other) is not None)
    check()  # from the store
    c.log_metric(rid, "m", 7.0, step=11, timestamp=500)
    _wait_ingested(helpers, data_dir, rid, "m", 7.0)
    got = c.get_run(rid).data.metrics  # a new highest step: read from the chunks stored since
    assert got["m"] == 7.0 and got["t"] == 5.0
    assert [r.info.run_name for r in c.search_runs([exp], "metrics.m > 6")] == ["r"]
    c.log_metric(rid, "m", 8.0, step=4, timestamp=9000)  # lower step: not the latest
    _wait_ingested(helpers, data_dir, rid, "m", 8.0)
    assert c.get_run(rid).data.metrics["m"] == 7.0
    assert [r.info.run_name for r in c.search_runs([exp], "metrics.m > 7.5")] == []


def test_mlflow_metric_history_is_in_mlflows_order_and_pages(mlflow_env, client) -> None:
    """get-history lists points by timestamp, step, value (MLflow's SQL store), a point
    logged twice once, and honours max_results with next_page_token."""
    c = MlflowClient()
    rid = c.create_run(c.create_experiment("hist")).info.run_id
    c.log_batch(rid, metrics=[Metric("h", 0.0, 30, 0), Metric("h", 1.0, 10, 5),
                              Metric("h", 2.0, 20, 2), Metric("h", 3.0, 20, 1)])
    c.log_batch(rid, metrics=[Metric("h", 2.0, 20, 2)])  # the same point again
    want = [(5, 10, 1.0), (1, 20, 3.0), (2, 20, 2.0), (0, 30, 0.0)]
    assert [(m.step, m.timestamp, m.value) for m in c.get_metric_history(rid, "h")] == want
    http = client("viewer")
    url = "/api/2.0/mlflow/metrics/get-history"
    got, token, pages = [], None, 0
    while True:
        params = {"run_id": rid, "metric_key": "h", "max_results": 3}
        if token:
            params["page_token"] = token
        page = http.get(url, params=params).json()
        got += [(m["step"], m["timestamp"], m["value"]) for m in page["metrics"]]
        pages += 1
        token = page.get("next_page_token")
        if not token:
            break
    assert got == want and pages == 2
    bad = http.get(url, params={"run_id": rid, "metric_key": "h", "page_token": "LTE="})
    assert bad.status_code == 400 and bad.json()["error_code"] == "INVALID_PARAMETER_VALUE"


def test_mlflow_search_quoted_keys_aliases_and_page_tokens(mlflow_env) -> None:
    """Double-quoted keys (metrics."val loss") and values, MLflow's ``created`` alias, and a
    page_token that is not one the server made (a negative offset) refused."""
    import base64

    c = MlflowClient()
    exp = c.create_experiment("quirks")
    for i in range(3):
        rid = c.create_run(exp, run_name=f"r{i}", start_time=1000 + i).info.run_id
        c.log_metric(rid, "val loss", i, step=0)
        c.log_param(rid, "a b", f"x{i}")
    names = lambda rs: sorted(r.info.run_name for r in rs)
    assert names(c.search_runs([exp], 'metrics."val loss" > 0')) == ["r1", "r2"]
    assert names(c.search_runs([exp], "metrics.`val loss` > 0")) == ["r1", "r2"]
    assert names(c.search_runs([exp], 'params."a b" = "x1"')) == ["r1"]
    assert names(c.search_runs([exp], '"run_name" = "r2"')) == ["r2"]
    assert names(c.search_runs([exp], "attributes.created >= 1001")) == ["r1", "r2"]
    assert [r.info.run_name for r in c.search_runs([exp], order_by=["created ASC"])] == \
        ["r0", "r1", "r2"]
    assert [r.info.run_name for r in
            c.search_runs([exp], order_by=['metrics."val loss" DESC'])] == ["r2", "r1", "r0"]
    first = c.search_runs([exp], max_results=2, order_by=["created ASC"])
    assert len(first) == 2 and first.token
    rest = c.search_runs([exp], max_results=2, order_by=["created ASC"], page_token=first.token)
    assert [r.info.run_name for r in rest] == ["r2"] and not rest.token
    for raw in (b"-1", b"-4", b"+1", b"x"):
        with pytest.raises(MlflowException) as e:
            c.search_runs([exp], max_results=1, page_token=base64.urlsafe_b64encode(raw).decode())
        assert e.value.error_code == "INVALID_PARAMETER_VALUE"
        assert "page_token" in str(e.value)


def test_mlflow_tags_with_credentials_are_scrubbed_in_the_signed_env_only(mlflow_env,
                                                                        data_dir) -> None:
    """The tags' copy in the run's signed environment is scrubbed like a captured one
    (credentials in a repo URL, a secret-named tag); MLflow reads still get the tags as
    logged (an integrity review found mlflow.source.git.repoURL stored with its token)."""
    import assay
    from assay.errors import NotFoundError
    from loopback_server import wait_for

    c = MlflowClient()
    exp_id = c.create_experiment("scrub")
    url = "https://alice:ghtok123@github.com/org/repo.git"
    run = c.create_run(exp_id, tags={"mlflow.source.git.repoURL": url, "api_key": "sk-123",
                                     "team": "vision"})
    rid = run.info.run_id
    c.set_terminated(rid)
    assert c.get_run(rid).data.tags["mlflow.source.git.repoURL"] == url  # as logged
    api = assay.Api(data_dir)

    def stored():
        try:
            return api.run(rid).env.get("mlflow_tags")
        except NotFoundError:  # not ingested yet
            return None

    tags = wait_for(stored)
    assert tags["mlflow.source.git.repoURL"] == "https://github.com/org/repo.git"
    assert tags["api_key"] == "***" and tags["team"] == "vision"
