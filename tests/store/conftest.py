"""Fixtures for the store tests: an S3 API on loopback (moto) and the blob-store contract cases.

Every blob-store implementation runs the same contract suite through the parametrized
``blob_case`` fixture (Optuna's ``pytest_storages.py`` pattern). The S3 case starts moto's
threaded server on 127.0.0.1 with dummy credentials, so no test sends traffic anywhere else.
"""

from __future__ import annotations

import contextlib
import os
import socket
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from assay.store.blobs import BlobStore, FsspecBlobStore, LocalBlobStore

_AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
    "AWS_CONFIG_FILE": os.devnull,
    "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
    "NO_PROXY": "127.0.0.1,localhost",
    "no_proxy": "127.0.0.1,localhost",
}
_PROXY_ENV = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy",
              "all_proxy", "AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3")


@dataclass(frozen=True)
class S3Server:
    """A loopback S3 API: where it listens and the storage options that reach it."""

    endpoint_url: str
    bucket: str

    def storage_options(self) -> dict[str, Any]:
        return {"endpoint_url": self.endpoint_url, "key": "testing", "secret": "testing",
                "client_kwargs": {"region_name": "us-east-1"}}


def _free_loopback_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    """moto's S3 server on 127.0.0.1 with one bucket; dummy credentials, no proxies."""
    pytest.importorskip("moto.server")
    import boto3
    from moto.server import ThreadedMotoServer

    with pytest.MonkeyPatch.context() as mp:
        for name in _PROXY_ENV:
            mp.delenv(name, raising=False)
        for name, value in _AWS_ENV.items():
            mp.setenv(name, value)
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=_free_loopback_port(),
                                    verbose=False)
        server.start()
        try:
            host, port = server.get_host_and_port()
            endpoint = f"http://{host}:{port}"
            boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                         aws_access_key_id="testing", aws_secret_access_key="testing",
                         ).create_bucket(Bucket="assay-test")
            yield S3Server(endpoint, "assay-test")
        finally:
            server.stop()


@dataclass(frozen=True)
class BlobCase:
    """A blob store under test and a way to damage a stored blob behind its back."""

    name: str
    store: BlobStore
    corrupt: Callable[[str], None]


def _flip_first_byte(data: bytes) -> bytes:
    return bytes([data[0] ^ 0x01]) + data[1:] if data else b"\x00"


def _local_case(root: Path) -> BlobCase:
    store = LocalBlobStore(root)

    def corrupt(digest: str) -> None:
        path = store.path_of(digest)
        path.chmod(0o644)
        path.write_bytes(_flip_first_byte(path.read_bytes()))

    return BlobCase("local", store, corrupt)


def _fsspec_case(name: str, url: str, **options: Any) -> BlobCase:
    # Small blocks and two ranges at once, so the multipart and parallel paths run too.
    store = FsspecBlobStore(url, block_size=5 << 20, read_window=2, **options)

    def corrupt(digest: str) -> None:
        key = store.key_of(digest)
        store.fs.pipe_file(key, _flip_first_byte(store.fs.cat_file(key)))

    return BlobCase(name, store, corrupt)


_S3 = pytest.param("s3", marks=pytest.mark.integration)


def _case(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[BlobCase]:
    prefix = f"blobs-{uuid.uuid4().hex[:12]}"
    if request.param == "local":
        yield _local_case(tmp_path / "blobs")
    elif request.param == "memory":
        case = _fsspec_case("memory", f"memory://{prefix}")
        yield case
        with contextlib.suppress(FileNotFoundError):
            case.store.fs.rm(f"/{prefix}", recursive=True)
    else:
        server: S3Server = request.getfixturevalue("s3_server")
        yield _fsspec_case("s3", f"s3://{server.bucket}/{prefix}", **server.storage_options())


@pytest.fixture(params=["local", "memory", _S3])
def blob_case(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[BlobCase]:
    """Each BlobStore implementation, empty, for the shared contract suite."""
    yield from _case(request, tmp_path)


@pytest.fixture(params=["memory", _S3])
def fsspec_case(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[BlobCase]:
    """The FsspecBlobStore cases only (in-memory and loopback S3)."""
    yield from _case(request, tmp_path)


@pytest.fixture
def blob_store(blob_case: BlobCase) -> BlobStore:
    """Just the store of ``blob_case``."""
    return blob_case.store
