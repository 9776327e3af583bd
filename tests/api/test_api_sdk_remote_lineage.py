"""``assay.Api(server=...).lineage()``: the same (nodes, edges) frames as ``Api(dir)`` on the
directory the server serves, against a real uvicorn server."""

from __future__ import annotations

import assay
import pytest
from assay import Api
from assay.errors import AssayError, NotFoundError, PermissionDeniedError, UserInputError
from assay.sdk import remote_lineage
from assay.store.ingest import IngestLock
from assay.store.lance import LanceStore
from assay.store.lineage import add_edges

pytestmark = pytest.mark.integration


def _init(**kw):
    kw.setdefault("system_metrics_interval", None)
    kw.setdefault("capture", False)
    kw.setdefault("project", "lin")
    return assay.init(**kw)


@pytest.fixture(scope="module")
def graph(tmp_path_factory):
    """prep -> data:v0 (alias prod) -> train -> model:v0 -> evaluate -> report:v0, and
    scratch -> junk:v0 (deleted) from data:v0 too, with a chain of 60 more hops above prep
    (deeper than the server's largest depth=); made once, served fresh per test."""
    root = tmp_path_factory.mktemp("lineage")
    d = root / "assay-data"
    d.mkdir()
    (root / "data.csv").write_text("x,y\n1,2\n")
    (root / "model.pt").write_bytes(b"weights")
    (root / "report.md").write_text("# fine\n")
    (root / "junk.txt").write_text("oops\n")
    with _init(dir=d, name="prep") as prep:
        prep.log_artifact(root / "data.csv", name="data", type="dataset", aliases=["prod"])
    with _init(dir=d, name="train") as train:
        train.use_artifact("data:prod")
        train.log_artifact(root / "model.pt", name="model", type="model")
    with _init(dir=d, name="evaluate") as ev:
        ev.use_artifact("model:latest")
        ev.log_artifact(root / "report.md", name="report", type="report")
    with _init(dir=d, name="scratch") as scratch:
        scratch.use_artifact("data:v0")
        scratch.log_artifact(root / "junk.txt", name="junk", type="dataset")
    Api(d).delete_artifact("junk:v0", reason="test", delete_aliases=True, actor="t")
    chain, below = [], f"run:{prep.id}"
    for i in range(30):
        chain += [(f"artifact:raw{i}:v0", below, "consumed"),
                  (f"run:src{i}", f"artifact:raw{i}:v0", "produced")]
        below = f"run:src{i}"
    lock = IngestLock(d)
    assert lock.acquire(30)
    try:
        add_edges(LanceStore(d), chain)
    finally:
        lock.release()
    return {"dir": d, "prep": prep.id, "train": train.id, "eval": ev.id}


@pytest.fixture
def data_dir(graph, monkeypatch):
    """The graph's directory, which the ``server`` fixture serves (tokens are added to it)."""
    monkeypatch.setenv("ASSAY_DIR", str(graph["dir"]))
    return graph["dir"]


@pytest.fixture
def remote(server, tokens):
    with Api(server=server.url, token=tokens["viewer"]) as api:
        yield api


def _same(local, remote, *args, **kw):
    want, got = local.lineage(*args, **kw), remote.lineage(*args, **kw)
    for w, g in zip(want, got, strict=True):
        assert g.schema == w.schema
        assert g.equals(w), (args, kw, w, g)  # rows and their order
    return got


def test_a_servers_lineage_is_the_directorys_up_and_down(graph, data_dir, remote):
    local = Api(data_dir)
    train, ev = f"run:{graph['train']}", f"run:{graph['eval']}"
    cases = [
        ("report:v0", "up", None), ("report:latest", "up", 2), ("report", "up", 1),
        ("data:prod", "down", None), ("data:v0", "down", 1), ("data:prod", "down", 3),
        ("data:v0", "up", None), ("junk:v0", "up", None),  # deleted: its lineage stays
        (train, "up", None), (train, "down", None), (ev, "down", 60), (ev, "up", 60),
        ("model:v0", "up", True), ("report:v0", "up", 50), ("report:v0", "up", 51),
        ("report:v0", "up", 56), (f"run:{graph['prep']}", "up", 57),
    ]
    for spec, direction, depth in cases:
        _same(local, remote, spec, direction=direction, depth=depth)
    nodes, edges = remote.lineage("data:prod", "down")
    assert nodes["id"][0] == "artifact:data:v0" and nodes["depth"][0] == 0
    assert set(nodes["id"]) >= {"artifact:model:v0", "artifact:report:v0", "artifact:junk:v0",
                                train, ev}
    assert nodes.filter(nodes["id"] == "artifact:report:v0")["depth"].item() == 4
    assert (train, "artifact:model:v0", "produced") in edges.rows()
    up, _ = remote.lineage("report:v0", "up", depth=2)
    assert dict(zip(up["id"], up["depth"], strict=True)) == {
        "artifact:report:v0": 0, ev: 1, "artifact:model:v0": 2}
    assert not remote.lineage(train, "down", depth=1)[0]["depth"].is_in([2]).any()
    deep, deep_edges = remote.lineage("report:v0", "up", depth=56)  # cut here, not there
    assert deep["depth"].max() == 56 and deep_edges.height == 56
    assert remote.lineage("report:v0", "up")[0]["depth"].max() == 65


def test_refusals_are_the_directorys(graph, data_dir, remote):
    local = Api(data_dir)
    bad = [("data:v0", {"direction": "both"}), ("data:v0", {"depth": 0}),
           ("data:v0", {"depth": "2"}), ("artifact:data:v0", {}), ("run:", {}),
           ("data:v0:x", {}), (None, {}), ("nope:v0", {"direction": "sideways"})]
    for spec, kw in bad:
        with pytest.raises(UserInputError) as want:
            local.lineage(spec, **kw)
        with pytest.raises(UserInputError) as got:
            remote.lineage(spec, **kw)
        assert (got.value.message, got.value.hint) == (want.value.message, want.value.hint)
    missing = ["nope:v0", "data:v9", "data:staging", f"run:{'x' * 10}", "run:no-such-run",
               graph["train"]]  # a bare run id names an artifact, as in a directory
    for spec in missing:
        with pytest.raises(NotFoundError):
            local.lineage(spec)
        with pytest.raises(NotFoundError) as got:
            remote.lineage(spec)
        assert got.value.hint, spec
    with pytest.raises(NotFoundError) as got:
        remote.lineage("run:abcdef123")
    assert "runs()" in got.value.hint and "ASSAY_DIR" not in got.value.hint
    with pytest.raises(NotFoundError) as got:
        remote.lineage("data:v9")
    assert "v0" in got.value.hint  # the server's hint lists the versions there are


def test_tokens(server, tokens, data_dir):
    for token in (None, "not-a-token"):
        api = Api(server=server.url, token=token)
        with api, pytest.raises(PermissionDeniedError) as e:
            api.lineage("data:v0")
        assert "token" in e.value.hint


def test_a_cut_graph_is_refused_not_returned(remote, monkeypatch):
    monkeypatch.setattr(remote_lineage, "_MAX_NODES", 2)
    assert remote.lineage("report:v0", "up", depth=1)[0].height == 2  # fits
    with pytest.raises(AssayError) as e:
        remote.lineage("report:v0", "up")
    assert "depth=" in e.value.hint and "more than 2 nodes" in e.value.message


class _Answers:
    """A RemoteReader stand-in that answers every GET with ``body``."""

    server = "http://127.0.0.1:9"

    def __init__(self, body):
        self.body = body

    def _check_run(self, run_id):
        pass

    def _get(self, path, params=None, **kw):
        assert path == "/api/lineage" and params["max_nodes"] == 5000
        return self.body


@pytest.mark.parametrize("body", [
    {"nodes": [], "edges": []},  # no root
    {"root": "artifact:m:v0", "nodes": [], "edges": []},  # the root is not among the nodes
    {"root": "artifact:m:v0", "nodes": [{"id": "artifact:m:v0", "depth": 1}], "edges": []},
    {"root": "artifact:m:v0", "nodes": [{"id": "artifact:m:v0", "depth": 0},
                                        {"id": "run:r", "depth": "-1"}], "edges": []},
    {"root": "artifact:m:v0", "nodes": [{"id": "artifact:m:v0", "depth": 0},
                                        {"id": "nonsense", "depth": -1}], "edges": []},
])
def test_an_answer_that_is_not_a_lineage_says_so(body):
    with pytest.raises(AssayError, match="not an assay server's answer"):
        remote_lineage.remote_lineage(_Answers(body), "m:v0", "up")
