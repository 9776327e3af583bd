"""assay.init(server=..., token=...): the SDK logging through a real server."""

from __future__ import annotations

import time

import assay
import pytest
from assay.errors import NotFoundError

pytestmark = pytest.mark.integration


def test_sdk_logs_to_a_server_and_resumes_there(server, tokens, tmp_path, data_dir):
    local = tmp_path / "laptop"
    run = assay.init(project="remote-sdk", dir=local, server=server.url,
                     token=tokens["researcher"], config={"lr": 0.1},
                     system_metrics_interval=None, capture=False)
    for i in range(500):
        run.log({"loss": 1.0 / (i + 1)})
    run.finish()
    api = assay.Api(data_dir)  # the server's data directory

    def settled(n):  # finish() returns once the server has the records durably; the
        deadline = time.monotonic() + 30  # server's ingester makes them queryable soon after
        while time.monotonic() < deadline:
            try:
                h = api.history(run.id)
                if h.height == n and api.run(run.id).status == "completed":
                    return h
            except NotFoundError:
                pass
            time.sleep(0.1)
        raise AssertionError("the server never made the run queryable")

    h = settled(500)
    assert h.height == 500 and api.run(run.id).status == "completed"
    assert api.run(run.id).config == {"lr": 0.1}
    again = assay.init(project="remote-sdk", dir=local, server=server.url,
                       token=tokens["researcher"], resume=run.id,
                       system_metrics_interval=None, capture=False)
    again.log({"loss": 0.0001})
    again.finish()
    h = settled(501)
    assert h.height == 501 and h["step"].max() == 500
    assert not (local / "lance").exists()  # nothing was ingested on the client
