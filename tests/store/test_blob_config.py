"""A data directory's blob store: local by default, an object store when ASSAY_BLOB_STORE
names one, pinned in the directory so every process uses the same store."""

from __future__ import annotations

import json
import uuid

import pytest
from assay.errors import UserInputError
from assay.store.blob_config import PIN_FILE, blob_store_for
from assay.store.blobs import FsspecBlobStore, LocalBlobStore


@pytest.fixture
def clean_env(monkeypatch):
    monkeypatch.delenv("ASSAY_BLOB_STORE", raising=False)
    monkeypatch.delenv("ASSAY_BLOB_STORE_OPTIONS", raising=False)
    return monkeypatch


def test_the_default_is_the_directorys_own_blobs_folder(tmp_path, clean_env):
    store = blob_store_for(tmp_path)
    assert isinstance(store, LocalBlobStore) and store.root == tmp_path / "blobs"
    assert not (tmp_path / PIN_FILE).exists()


def test_a_url_is_pinned_so_a_process_without_the_variable_uses_it_too(tmp_path, clean_env):
    url = f"memory://pin-{uuid.uuid4().hex[:8]}"
    clean_env.setenv("ASSAY_BLOB_STORE", url)
    clean_env.setenv("ASSAY_BLOB_STORE_OPTIONS", json.dumps({"skip_instance_cache": True,
                                                             "secret": "s3cr3t", "key": "AK"}))
    first = blob_store_for(tmp_path)
    assert isinstance(first, FsspecBlobStore) and first.uri == url
    ref = first.put_bytes(b"weights")
    pin = json.loads((tmp_path / PIN_FILE).read_text())
    assert pin == {"uri": url, "options": {"skip_instance_cache": True}}  # no credentials
    clean_env.delenv("ASSAY_BLOB_STORE")
    clean_env.delenv("ASSAY_BLOB_STORE_OPTIONS")
    later = blob_store_for(tmp_path)  # the daemon, the CLI, a script without the variable
    assert isinstance(later, FsspecBlobStore) and later.get_bytes(ref.digest) == b"weights"
    clean_env.setenv("ASSAY_BLOB_STORE", "memory://another")
    with pytest.raises(UserInputError, match="keeps its blobs at memory://") as e:
        blob_store_for(tmp_path)
    assert PIN_FILE in e.value.hint
    clean_env.setenv("ASSAY_BLOB_STORE", url + "/")  # the same store, spelled with a slash
    assert blob_store_for(tmp_path).uri == url


def test_bad_settings_are_refused_and_nothing_is_pinned(tmp_path, clean_env):
    clean_env.setenv("ASSAY_BLOB_STORE", "memory://x")
    clean_env.setenv("ASSAY_BLOB_STORE_OPTIONS", "{not json")
    with pytest.raises(UserInputError, match="not JSON"):
        blob_store_for(tmp_path)
    clean_env.setenv("ASSAY_BLOB_STORE_OPTIONS", "[1]")
    with pytest.raises(UserInputError, match="JSON object"):
        blob_store_for(tmp_path)
    clean_env.delenv("ASSAY_BLOB_STORE_OPTIONS")
    clean_env.setenv("ASSAY_BLOB_STORE", "nosuchproto://bucket/x")
    with pytest.raises(UserInputError, match="cannot open blob store"):
        blob_store_for(tmp_path)
    clean_env.setenv("ASSAY_BLOB_STORE", "/some/local/path")
    with pytest.raises(UserInputError, match="not an object-store URL"):
        blob_store_for(tmp_path)
    assert not (tmp_path / PIN_FILE).exists()


def test_a_directory_with_local_blobs_is_not_switched(tmp_path, clean_env):
    LocalBlobStore(tmp_path / "blobs").put_bytes(b"named by a version")
    clean_env.setenv("ASSAY_BLOB_STORE", "memory://switch")
    with pytest.raises(UserInputError, match="already keeps blobs") as e:
        blob_store_for(tmp_path)
    assert "new data directory" in e.value.hint
    assert not (tmp_path / PIN_FILE).exists()


def test_a_damaged_pin_is_an_error_not_a_silent_local_store(tmp_path, clean_env):
    (tmp_path / PIN_FILE).write_text("{")
    with pytest.raises(UserInputError, match="not valid JSON"):
        blob_store_for(tmp_path)
    (tmp_path / PIN_FILE).write_text('{"options": {}}')
    with pytest.raises(UserInputError, match="does not name a blob store"):
        blob_store_for(tmp_path)


@pytest.mark.integration
def test_artifacts_and_diffs_of_a_data_directory_pinned_to_s3_live_in_the_bucket(
        s3_server, tmp_path, clean_env):
    """End to end on a loopback S3 (moto): versions, downloads, verify and gc go through the
    bucket, and nothing lands in the directory's own blobs/ folder."""
    import assay

    data = tmp_path / "data"
    url = f"s3://{s3_server.bucket}/dir-{uuid.uuid4().hex[:8]}"
    clean_env.setenv("ASSAY_BLOB_STORE", url)
    opts = s3_server.storage_options()
    clean_env.setenv("ASSAY_BLOB_STORE_OPTIONS", json.dumps(opts))
    src = tmp_path / "ckpt"
    src.mkdir()
    (src / "w.bin").write_bytes(b"\x01" * 4096)
    (src / "cfg.json").write_text("{}")
    with assay.init(project="s3", dir=data, system_metrics_interval=None, capture=False) as run:
        run.log({"loss": 1.0})
        v = run.log_artifact(src, name="ckpt", type="model")
    # Another process's view: only the pin (endpoint) and the backend's own credentials.
    clean_env.delenv("ASSAY_BLOB_STORE")
    clean_env.delenv("ASSAY_BLOB_STORE_OPTIONS")
    pin = json.loads((data / PIN_FILE).read_text())
    assert pin["uri"] == url and "secret" not in pin["options"] and "key" not in pin["options"]
    api = assay.Api(data)
    out = api.artifact("ckpt:latest").download(tmp_path / "dl")
    assert (out / "w.bin").read_bytes() == b"\x01" * 4096
    assert api.verify() == (1, [])
    assert not (data / "blobs").exists() or not any(p.is_file() for p in (data / "blobs").rglob("*"))
    store = blob_store_for(data)
    assert isinstance(store, FsspecBlobStore) and store.exists(v.manifest_blob)
    assert api.gc(grace=60, dry_run=True).swept == 0  # everything is referenced


@pytest.mark.integration
def test_a_server_whose_directory_is_pinned_to_s3_takes_remote_artifacts_into_the_bucket(
        s3_server, tmp_path, clean_env):
    import assay
    from assay.api.auth import TokenStore
    from loopback_server import ThreadServer  # tests/ is on sys.path (rootdir conftest)

    data = tmp_path / "server-data"
    data.mkdir()
    clean_env.setenv("ASSAY_BLOB_STORE", f"s3://{s3_server.bucket}/srv-{uuid.uuid4().hex[:8]}")
    clean_env.setenv("ASSAY_BLOB_STORE_OPTIONS", json.dumps(s3_server.storage_options()))
    blob_store_for(data)  # `assay server` pins it on its first open
    clean_env.delenv("ASSAY_BLOB_STORE")
    token, _ = TokenStore(data).create("r", "researcher")
    srv = ThreadServer(data).start()
    try:
        f = tmp_path / "weights.bin"
        f.write_bytes(b"\x07" * 10_000)
        with assay.init(project="s3", dir=tmp_path / "laptop", server=srv.url, token=token,
                        system_metrics_interval=None, capture=False) as run:
            v = run.log_artifact(f, name="w", type="model")
        store = blob_store_for(data)
        assert isinstance(store, FsspecBlobStore) and store.exists(v.manifest_blob)
        assert not (data / "blobs").exists() or not any(
            p.is_file() for p in (data / "blobs").rglob("*"))
        assert assay.Api(data).artifact("w:v0").download(tmp_path / "dl").read_bytes() \
            == b"\x07" * 10_000
    finally:
        srv.stop()


def test_nested_credentials_are_not_pinned_and_racing_pins_agree(tmp_path, clean_env):
    """client_kwargs' AWS keys and adlfs' connection_string reached blob-store.json, and two
    threads pinning at once could crash on each other's temp file (regression review)."""
    import threading

    url = f"memory://nested-{uuid.uuid4().hex[:8]}"
    clean_env.setenv("ASSAY_BLOB_STORE", url)
    clean_env.setenv("ASSAY_BLOB_STORE_OPTIONS", json.dumps({
        "client_kwargs": {"region_name": "eu-west-1", "aws_access_key_id": "AKIA",
                          "aws_secret_access_key": "s3cr3t"},
        "connection_string": "AccountName=a;AccountKey=s3cr3t", "skip_instance_cache": True}))
    errors: list[BaseException] = []

    def open_it():
        try:
            blob_store_for(tmp_path)
        except BaseException as exc:  # noqa: BLE001 - collected for the assertion
            errors.append(exc)

    threads = [threading.Thread(target=open_it) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    text = (tmp_path / PIN_FILE).read_text()
    assert "s3cr3t" not in text and "AKIA" not in text
    assert json.loads(text)["options"] == {"client_kwargs": {"region_name": "eu-west-1"},
                                           "skip_instance_cache": True}
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
