"""What a run's environment shows to whom: variable values for the run's owner and
supervisors, names only for everyone else; argv and values scrubbed again as served."""

from __future__ import annotations

import json
import time

import pytest
from assay.api.auth import Principal, Role
from assay.api.runs import may_see_environ, run_public
from assay.store.records import RunRecord, RunStatus

# A run captured before the SDK scrubbed values: its signed record still holds these.
_OLD_ENV = {
    "python": "3.11.9",
    "argv": ["train.py", "--api-key=sk-live-xyz", "--password", "hunter2", "--lr", "0.1"],
    "environ": {"HTTPS_PROXY": "http://bob:proxypw@proxy:3128", "DB_PASS": "dbpass123",
                "LANG": "C.UTF-8"},
}


def _record(env: dict | None = None) -> RunRecord:
    return RunRecord(run_id="r1", project="p", name="n", status=RunStatus.COMPLETED,
                     created_at=1.0, updated_at=2.0, env=json.loads(json.dumps(env or _OLD_ENV)))


def test_environ_values_are_for_the_runs_owner_and_supervisors_only() -> None:
    def who(role: Role, name: str) -> Principal:
        return Principal(f"id{name}", name, role)

    assert may_see_environ(who(Role.SUPERVISOR, "sup"), None)
    assert may_see_environ(who(Role.ADMIN, "adm"), "alice")
    assert may_see_environ(who(Role.RESEARCHER, "alice"), "alice")
    assert not may_see_environ(who(Role.RESEARCHER, "bob"), "alice")
    assert not may_see_environ(who(Role.RESEARCHER, "alice"), None)  # no owner on this server
    assert not may_see_environ(who(Role.VIEWER, "alice"), "alice")
    assert not may_see_environ(None, "alice")


def test_run_public_hides_environ_values_by_default_and_rescrubs_old_records() -> None:
    hidden = run_public(_record())
    assert hidden["environ_hidden"] is True
    assert hidden["env"]["environ"] == {"HTTPS_PROXY": None, "LANG": None}
    assert hidden["env"]["argv"] == ["train.py", "--api-key=***", "--password", "***", "--lr",
                                     "0.1"]
    shown = run_public(_record(), show_environ=True)
    assert shown["environ_hidden"] is False
    assert shown["env"]["environ"] == {"HTTPS_PROXY": "http://proxy:3128", "LANG": "C.UTF-8"}
    for secret in ("sk-live-xyz", "hunter2", "proxypw", "dbpass123"):
        assert secret not in json.dumps(shown) and secret not in json.dumps(hidden)
    assert run_public(_record({"python": "3.11"}))["env"] == {"python": "3.11"}


@pytest.mark.integration
def test_get_run_serves_environ_values_to_owner_and_supervisor_not_to_viewer(
        server, client, tokens, local_dir, helpers) -> None:
    run = helpers.RemoteRunHarness(local_dir, server.url, tokens["researcher"])
    run.writer.queue.append({"k": "env", "time": time.time(), "env": _OLD_ENV, "git": {}})
    assert run.finish() is True
    path = f"/api/runs/{run.run_id}"
    viewer = client("viewer")
    got = helpers.wait_for(lambda: (r := viewer.get(path).json()).get("status") == "completed"
                           and r)
    assert got["environ_hidden"] is True
    assert got["env"]["environ"] == {"HTTPS_PROXY": None, "LANG": None}
    assert got["env"]["argv"][1:4] == ["--api-key=***", "--password", "***"]
    assert client("researcher2").get(path).json()["env"]["environ"]["LANG"] is None
    for role in ("researcher", "supervisor", "admin"):  # the owner, and supervisors and up
        body = client(role).get(path).json()
        assert body["environ_hidden"] is False, role
        assert body["env"]["environ"] == {"HTTPS_PROXY": "http://proxy:3128", "LANG": "C.UTF-8"}
        assert "proxypw" not in json.dumps(body) and "hunter2" not in json.dumps(body)
