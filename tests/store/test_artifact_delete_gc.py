"""Deleting artifact versions (tombstones) and garbage-collecting blobs, on real LanceDB files."""

from __future__ import annotations

import os
import time

import pytest
from assay.errors import ConflictError, IntegrityError, NotFoundError, UserInputError
from assay.sdk.graph import open_graph
from assay.store.artifacts import ArtifactRegistry
from assay.store.audit import AuditTrail
from assay.store.blobs import FsspecBlobStore, LocalBlobStore
from assay.store.gc import collect_garbage
from assay.store.ingest import IngestLock
from assay.store.lance import LanceStore
from assay.store.lineage import lineage
from assay.store.manifests import get_manifest

pytestmark = pytest.mark.integration

HOUR = 3600.0


@pytest.fixture
def reg(tmp_path):
    root = tmp_path / "data"
    root.mkdir()
    return ArtifactRegistry(LanceStore(root), LocalBlobStore(root / "blobs", durable=False),
                            IngestLock(root), AuditTrail(root))


def _tree(path, **files):
    path.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (path / name).write_text(text)
    return path


def _age(reg, seconds=2 * HOUR):
    """Make every stored blob look written ``seconds`` ago."""
    t = time.time() - seconds
    for b in reg.blobs.iter_blobs():
        os.utime(reg.blobs.path_of(b.digest), (t, t))


def _files(reg, spec):
    av = reg._resolve_version(*spec.split(":"), include_deleted=True)
    return {e.digest for e in get_manifest(reg.blobs, av.manifest_blob)} | {av.manifest_blob}


@pytest.fixture
def two_versions(reg, tmp_path):
    """model:v0 and model:v1 share ``shared.bin``; v1 is latest, v0 has alias prod."""
    d = _tree(tmp_path / "m", **{"shared.bin": "S" * 100, "w.bin": "zero"})
    reg.log(d, "model", "model", project="p", run_id="run0", aliases=["prod"])
    (d / "w.bin").write_text("one")
    reg.log(d, "model", "model", project="p", run_id="run1")
    return reg


def test_deleted_version_no_longer_resolves_but_stays_in_lineage(two_versions):
    reg = two_versions
    reg.use("model:v1", "run2")
    v1 = reg.delete("model:v1", actor="user:ann", reason="bad eval", delete_aliases=True)
    assert v1.version == 1 and v1.aliases == ("latest",)
    with pytest.raises(NotFoundError, match="deleted by user:ann.*bad eval"):
        reg.get("model:v1")
    with pytest.raises(NotFoundError):
        reg.use("model:v1", "run3")
    assert reg.get("model:latest").version == 0  # latest moved back to the newest left
    assert reg.list(name="model")["version"].to_list() == [0]
    full = reg.list(name="model", include_deleted=True)
    assert full["version"].to_list() == [0, 1]
    assert full["deleted_by"].to_list() == [None, "user:ann"]
    assert full["delete_reason"].to_list()[1] == "bad eval"
    assert reg.get("model:v1", include_deleted=True).digest == v1.digest  # history stays
    nodes, _edges = lineage(reg.store, "artifact:model:v1", "down")
    assert "run:run2" in nodes["id"].to_list()
    nodes, _ = lineage(reg.store, "artifact:model:v1", "up")
    assert "run:run1" in nodes["id"].to_list()
    audit = reg.audit.entries(limit=100)[1]
    actions = [(e["action"], e["actor"]) for e in audit]
    assert ("artifact.delete", "user:ann") in actions
    assert reg.audit.verify() == []


def test_new_version_after_deleting_latest_never_reuses_a_number(two_versions, tmp_path):
    reg = two_versions
    reg.delete("model:v1", actor="a", delete_aliases=True)
    d = _tree(tmp_path / "m", **{"w.bin": "one"})  # v1's content again: a new version
    v = reg.log(d, "model", "model", project="p")
    assert v.version == 2 and reg.get("model:latest").version == 2
    with pytest.raises(NotFoundError) as e:
        reg.get("model:v9")
    assert "versions v0..v2 (deleted: v1)" in e.value.hint


def test_deleting_every_version_drops_latest(reg, tmp_path):
    reg.log(_tree(tmp_path / "a", x="1"), "ds", "dataset", project="p")
    reg.delete("ds:v0", actor="a", delete_aliases=True)
    assert reg._aliases("ds") == {}
    with pytest.raises(NotFoundError, match="no artifact version ds:latest") as e:
        reg.get("ds")
    assert "every version of ds (v0..v0) was deleted" in e.value.hint
    assert reg.list(name="ds").height == 0


def test_version_with_aliases_is_refused_until_forced(two_versions):
    reg = two_versions
    with pytest.raises(ConflictError, match="still has aliases prod") as e:
        reg.delete("model:v0", actor="a")
    assert "delete_aliases=True" in e.value.hint and "set_alias" in e.value.hint
    with pytest.raises(ConflictError, match="latest"):
        reg.delete("model:v1", actor="a")
    assert reg.get("model:prod").version == 0  # nothing changed
    reg.set_alias("model:v1", "prod", "a", "promote")
    reg.delete("model:v0", actor="a")  # no aliases left: no force needed
    assert reg.get("model:prod").version == 1
    gone = reg.delete("model:v1", actor="a", delete_aliases=True)
    assert set(gone.aliases) == {"latest", "prod"}
    with pytest.raises(NotFoundError):
        reg.get("model:prod")
    assert {e["details"]["alias"] for e in reg.audit.entries(limit=100)[1]
            if e["action"] == "artifact.alias" and e["details"]["to"] is None} == {"prod", "latest"}


@pytest.mark.parametrize("spec, err, match", [
    ("model", UserInputError, "exact version"),
    ("model:latest", UserInputError, "exact version"),
    ("model:prod", UserInputError, "exact version"),
    ("model:vx", UserInputError, "does not name an exact version|invalid version"),
    ("model:", UserInputError, "exact version"),
    ("../etc:v0", UserInputError, "artifact"),
    ("", UserInputError, "artifact reference"),
    ("model:v7", NotFoundError, "no artifact version model:v7"),
    ("nope:v0", NotFoundError, "no artifact named 'nope'"),
])
def test_bad_delete_input_is_refused_and_loses_nothing(two_versions, spec, err, match):
    reg = two_versions
    before = reg.list(include_deleted=True)
    with pytest.raises(err, match=match):
        reg.delete(spec, actor="a", delete_aliases=True)
    assert reg.list(include_deleted=True).equals(before)
    assert reg.get("model:latest").version == 1 and reg.get("model:prod").version == 0


def test_double_delete_is_a_conflict(two_versions):
    reg = two_versions
    reg.set_alias("model:v1", "prod", "a", "promote")
    reg.delete("model:v0", actor="user:bob", reason="old")
    with pytest.raises(ConflictError, match="already deleted by user:bob"):
        reg.delete("model:v0", actor="a", delete_aliases=True)
    with pytest.raises(NotFoundError, match="deleted"):
        reg.set_alias("model:v0", "best", "a", "oops")
    assert len(reg.list(include_deleted=True)) == 2


def test_reason_must_be_a_short_string(two_versions):
    with pytest.raises(UserInputError, match="reason"):
        two_versions.delete("model:v0", actor="a", reason="x" * 3000, delete_aliases=True)


def test_gc_dry_run_reports_and_real_run_sweeps_only_unshared_blobs(two_versions):
    reg = two_versions
    v0_files, v1_files = _files(reg, "model:v0"), _files(reg, "model:v1")
    reg.set_alias("model:v1", "prod", "a", "promote")
    reg.delete("model:v0", actor="a")
    _age(reg)
    only_v0 = v0_files - v1_files
    assert len(only_v0) == 2  # v0's w.bin and its manifest; shared.bin is also v1's
    dry = reg.gc(dry_run=True)
    assert dry.dry_run and set(dry.digests) == only_v0 and dry.swept == 2
    assert dry.swept_bytes == sum(reg.blobs.path_of(d).stat().st_size for d in only_v0)
    assert all(reg.blobs.exists(d) for d in only_v0)  # a dry run deletes nothing
    real = reg.gc(actor="user:ann")
    assert set(real.digests) == only_v0 and real.referenced == len(v1_files)
    assert not any(reg.blobs.exists(d) for d in only_v0)
    assert all(reg.blobs.exists(d) for d in v1_files)  # shared blob and live manifest stay
    assert reg.gc().swept == 0  # nothing left to collect
    entry = next(e for e in reg.audit.entries(limit=100)[1] if e["action"] == "blobs.gc")
    assert entry["actor"] == "user:ann" and entry["details"]["swept"] == 2


def test_grace_period_keeps_young_and_reused_blobs(two_versions, tmp_path):
    reg = two_versions
    reg.delete("model:v1", actor="a", delete_aliases=True)
    only_v1 = _files(reg, "model:v1") - _files(reg, "model:v0")
    rep = reg.gc()  # default grace: an hour; everything was just written
    assert rep.swept == 0 and rep.young == len(only_v1)
    _age(reg)
    # An upload in flight puts v1's bytes again before its version commits: the put
    # freshens the old blob, so gc keeps it although no record references it yet.
    reg.blobs.put_bytes(b"one")
    rep = reg.gc()
    assert rep.young == 1 and rep.swept == len(only_v1) - 1
    assert reg.blobs.exists(reg.blobs.put_bytes(b"one").digest)
    assert reg.gc(grace=0).swept == 1


def test_sweep_is_atomic_against_a_freshening_put(reg):
    ref = reg.blobs.put_bytes(b"abc")
    _age(reg)
    cutoff = time.time() - 60
    reg.blobs.put_bytes(b"abc")  # freshened after the listing, before the sweep
    assert reg.blobs.sweep(ref.digest, cutoff) is False and reg.blobs.exists(ref.digest)
    _age(reg)
    assert reg.blobs.sweep(ref.digest, cutoff) is True and not reg.blobs.exists(ref.digest)
    assert reg.blobs.sweep(ref.digest, cutoff) is False  # already gone
    assert reg.blobs.put_bytes(b"abc").digest == ref.digest and reg.blobs.exists(ref.digest)


def test_gc_puts_back_blobs_a_crashed_sweep_left_aside(reg):
    ref = reg.blobs.put_bytes(b"kept")
    path = reg.blobs.path_of(ref.digest)
    os.rename(path, reg.blobs.root / "tmp" / f"{path.name}.gc")  # crashed mid-sweep
    assert reg.blobs.recover_sweeps() == 1 and reg.blobs.get_bytes(ref.digest) == b"kept"
    os.rename(path, reg.blobs.root / "tmp" / f"{path.name}.gc")
    assert reg.blobs.get_bytes(ref.digest) == b"kept"  # a read puts it back too
    assert path.is_file() and not list((reg.blobs.root / "tmp").glob("*.gc"))


def test_gc_keeps_blobs_runs_and_unsynced_wals_reference(reg):
    diff = reg.blobs.put_bytes(b"diff --git a b").digest
    wal_diff = reg.blobs.put_bytes(b"diff of a crashed run").digest
    junk = reg.blobs.put_bytes(b"junk").digest
    root = reg.store.root
    (root / "wal" / "r1").mkdir(parents=True)
    (root / "wal" / "r1" / "000000.wal").write_bytes(
        b"AW\x00\x00" + f'{{"k":"env","git":{{"diff_blob":"{wal_diff}"}}}}'.encode())
    import pyarrow as pa
    from assay.store.schemas import RUNS_SCHEMA

    row = {f.name: None for f in RUNS_SCHEMA}
    row.update(run_id="r0", project="p", git=f'{{"diff_blob": "{diff}"}}', env="{}")
    with reg.lock:
        reg.store.write_table("runs").add(pa.Table.from_pylist([row], schema=RUNS_SCHEMA))
    _age(reg)
    rep = reg.gc()
    assert rep.digests == (junk,)
    assert reg.blobs.exists(diff) and reg.blobs.exists(wal_diff)


def test_gc_stops_before_deleting_anything_when_a_live_manifest_is_lost(two_versions):
    reg = two_versions
    reg.set_alias("model:v1", "prod", "a", "promote")
    reg.delete("model:v0", actor="a")
    _age(reg)
    reg.blobs.delete(reg.get("model:v1").manifest_blob)
    count = len(list(reg.blobs.iter_blobs()))
    with pytest.raises(IntegrityError, match="model:v1.*before deleting anything") as e:
        reg.gc()
    assert "delete model:v1" in e.value.hint
    assert len(list(reg.blobs.iter_blobs())) == count


def test_gc_removes_abandoned_partial_uploads(reg):
    part = reg.blobs.root / "tmp" / "x.part"
    part.write_bytes(b"12345")
    assert reg.gc(grace=HOUR).partials == 0
    t = time.time() - 2 * HOUR
    os.utime(part, (t, t))
    assert reg.gc(dry_run=True).partials == 1 and part.exists()
    rep = reg.gc()
    assert (rep.partials, rep.partial_bytes) == (1, 5) and not part.exists()


@pytest.mark.parametrize("grace", [-1, float("nan"), float("inf"), "1h", True, None])
def test_bad_grace_is_refused(reg, grace):
    with pytest.raises(UserInputError, match="grace"):
        collect_garbage(reg, grace=grace)  # type: ignore[arg-type]


def test_gc_on_a_store_that_cannot_freshen_says_which_stores_are_supported(reg):
    from assay.store.blobs import BlobStore

    class NoGc(FsspecBlobStore):
        iter_blobs = BlobStore.iter_blobs  # a store that cannot list with reuse times

    reg.blobs = NoGc("memory://gc-test")
    with pytest.raises(UserInputError, match="not supported for NoGc") as e:
        reg.gc(dry_run=True)
    assert "LocalBlobStore and FsspecBlobStore" in e.value.hint


def test_existing_data_dirs_without_the_tombstone_table_read_as_before(two_versions):
    reg = two_versions
    assert reg.store.table("artifact_deletions") is None
    assert reg.list()["version"].to_list() == [0, 1]
    assert "deleted_at" not in reg.list().columns
    assert reg.gc(dry_run=True).swept == 0


def test_verify_still_passes_after_a_used_version_is_deleted_and_collected(data_dir, tmp_path):
    import assay

    kw = {"system_metrics_interval": None, "capture": False, "project": "p"}
    data = _tree(tmp_path / "d", a="1")
    with assay.init(**kw) as r1:
        r1.log_artifact(data, name="ds", type="dataset")
    with assay.init(**kw) as r2:
        r2.use_artifact("ds:v0")
        r2.log({"x": 1.0})
    api = assay.Api()
    assert api.verify()[1] == []
    api.delete_artifact("ds:v0", reason="pii", delete_aliases=True)
    reg = open_graph(api.dir).artifacts
    _age(reg)
    assert api.gc().swept == 2
    checked, problems = api.verify()
    assert checked == 2 and problems == []
    assert api.artifacts().height == 0
    assert api.artifacts(include_deleted=True)["deleted_by"].to_list()[0].startswith("user")
    nodes, _ = api.lineage(f"run:{r2.id}", direction="up")
    assert "artifact:ds:v0" in nodes["id"].to_list()
    nodes, _ = api.lineage("ds:v0", direction="down")
    assert f"run:{r2.id}" in nodes["id"].to_list()
    with pytest.raises(NotFoundError, match="deleted"):
        api.artifact("ds:v0")


def test_cli_artifact_list_delete_and_gc(two_versions):
    from assay.cli import app
    from typer.testing import CliRunner

    reg = two_versions
    runner = CliRunner()
    d = ["--dir", str(reg.store.root)]
    out = runner.invoke(app, ["artifact", "delete", "model:v0", "-r", "old", *d])
    assert out.exit_code == 2 and "still has aliases prod" in out.output
    assert "--delete-aliases" in out.output
    out = runner.invoke(app, ["artifact", "delete", "model:prod", *d])
    assert out.exit_code == 2 and "exact version" in out.output
    out = runner.invoke(app, ["artifact", "delete", "model:v5", *d])
    assert out.exit_code == 2 and "no artifact version model:v5" in out.output
    out = runner.invoke(app, ["artifact", "delete", "model:v0", "-r", "old", "--force", *d])
    assert out.exit_code == 0, out.output
    assert "deleted model:v0 (aliases removed: prod)" in out.output
    out = runner.invoke(app, ["artifact", "delete", "model:v0", "--force", *d])
    assert out.exit_code == 2 and "already deleted by cli:" in out.output
    out = runner.invoke(app, ["artifact", "list", *d])
    assert out.exit_code == 0 and "model:v1" in out.output and "model:v0" not in out.output
    out = runner.invoke(app, ["artifact", "list", "--deleted", *d])
    assert "model:v0" in out.output and "DELETED" in out.output and ": old" in out.output
    out = runner.invoke(app, ["artifact", "gc", "--dry-run", *d])
    assert out.exit_code == 0 and "would delete 0 blob(s)" in out.output
    _age(reg)
    out = runner.invoke(app, ["artifact", "gc", "--dry-run", "--json", *d])
    assert out.exit_code == 0 and '"swept": 2' in out.output  # v0's w.bin and manifest
    out = runner.invoke(app, ["artifact", "gc", "--grace", "soon", *d])
    assert out.exit_code == 2 and "invalid duration" in out.output
    out = runner.invoke(app, ["artifact", "gc", "--grace", "30m", *d])
    assert out.exit_code == 0 and "deleted 2 blob(s)" in out.output
    assert reg.get("model:latest").version == 1


def test_threads_sharing_a_registry_delete_without_lost_writes(reg, tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    d = tmp_path / "m"
    for i in range(6):
        _tree(d, w=str(i))
        reg.log(d, "m", "model", project="p")
    with ThreadPoolExecutor(4) as pool:
        done = list(pool.map(lambda i: reg.delete(f"m:v{i}", actor=f"t{i}").version, range(5)))
    assert sorted(done) == [0, 1, 2, 3, 4]
    full = reg.list(include_deleted=True)
    assert full["deleted_by"].to_list() == ["t0", "t1", "t2", "t3", "t4", None]
    assert reg.get("m:latest").version == 5


def test_a_tombstone_without_its_audit_entry_does_not_excuse_changed_bytes(data_dir, tmp_path):
    """Anyone who can write the tables can add a tombstone row; only the signed audit entry
    of a real delete lets verify skip a version's (possibly collected) bytes."""
    import assay
    import pyarrow as pa
    from assay.store.schemas import ARTIFACT_DELETIONS_SCHEMA

    kw = {"system_metrics_interval": None, "capture": False, "project": "p"}
    data = _tree(tmp_path / "d", a="1" * 700)
    with assay.init(**kw) as r1:
        r1.log_artifact(data, name="ds", type="dataset")
    api = assay.Api()
    reg = open_graph(api.dir).artifacts
    av = reg.get("ds:v0")
    blob = next(e.digest for e in get_manifest(reg.blobs, av.manifest_blob))
    path = reg.blobs.path_of(blob)
    path.chmod(0o644)
    path.write_text("2" * 700)  # the bytes are changed...
    row = {"name": "ds", "version": 0, "digest": av.digest, "deleted_at": time.time(),
           "deleted_by": "mallory", "reason": "", "aliases": []}
    with reg.lock:  # ...and a tombstone row is forged to hide it
        reg.store.write_table("artifact_deletions").add(
            pa.Table.from_pylist([row], schema=ARTIFACT_DELETIONS_SCHEMA))
    _, problems = api.verify()
    assert any("artifact ds:v0" in str(p) and "corrupt" in str(p) for p in problems), \
        problems


# -- versions committed from a manifest (a client that uploaded to a server) ---------------------
def test_log_manifest_checks_every_blob_and_its_size(reg):
    from assay.store.manifests import ManifestEntry

    ref = reg.blobs.put_bytes(b"weights")
    e = ManifestEntry("w.bin", ref.digest, ref.size)
    av = reg.log_manifest([e], "m", "model", project="p", run_id="r1")
    assert (av.version, av.files, av.size) == (0, 1, 7)
    assert [x.path for x in reg.manifest(av)] == ["w.bin"]
    with pytest.raises(UserInputError, match="7 bytes, the manifest says 8"):
        reg.log_manifest([ManifestEntry("w.bin", ref.digest, 8)], "m", "model", project="p")
    gone = ManifestEntry("x.bin", "sha256:" + "0" * 64, 1)
    with pytest.raises(NotFoundError, match="x.bin"):
        reg.log_manifest([e, gone], "m", "model", project="p")
    with pytest.raises(UserInputError, match="more than once"):
        reg.log_manifest([e, e], "m", "model", project="p")
    assert reg.list().height == 1  # nothing of the refused ones was written


def test_a_blob_swept_after_the_check_is_caught_before_the_version_is_written(reg, monkeypatch):
    """gc takes no ingest lock: one that sweeps a blob between log_manifest's first check and
    its commit must not leave a version without its file."""
    from assay.store.manifests import ManifestEntry

    ref = reg.blobs.put_bytes(b"weights")
    real = type(reg.blobs).reuse
    seen = []

    def reuse_then_sweep(store, digest):
        seen.append(digest)
        if len(seen) == 2:  # the sweep lands after the first check
            os.chmod(store.path_of(digest), 0o644)
            store.path_of(digest).unlink()
        return real(store, digest)

    monkeypatch.setattr(type(reg.blobs), "reuse", reuse_then_sweep)
    with pytest.raises(NotFoundError, match="w.bin"):
        reg.log_manifest([ManifestEntry("w.bin", ref.digest, 7)], "m", "model", project="p")
    assert reg.list().height == 0


def test_a_manifest_with_a_duplicate_among_many_entries_is_refused_at_once():
    from assay.store.manifests import ManifestEntry, manifest_json

    d = "sha256:" + "1" * 64
    entries = [ManifestEntry(f"f{i:06d}", d, 1) for i in range(200_000)]
    entries.append(ManifestEntry("f000123", d, 1))
    with pytest.raises(UserInputError, match="'f000123' more than once"):
        manifest_json(entries)
