from __future__ import annotations

import json
import os
import subprocess
import sys
import types

import pytest
from assay.sdk.capture import (
    capture_env,
    capture_git,
    is_secret_name,
    scrub_argv,
    scrub_url,
)
from assay.sdk.system import GpuProbe, SystemSampler


@pytest.mark.parametrize("url,want", [
    ("https://user:ghp_secret@github.com/org/repo.git", "https://github.com/org/repo.git"),
    ("https://oauth2:tok@gitlab.com:8443/g/r", "https://gitlab.com:8443/g/r"),
    ("git@github.com:org/repo.git", "git@github.com:org/repo.git"),
    ("ssh://git:pw@host/x", "ssh://host/x"),
])
def test_remote_urls_lose_their_credentials(url, want):
    assert scrub_url(url) == want


def test_secret_looking_environment_variables_are_not_recorded(monkeypatch):
    monkeypatch.setenv("WANDB_API_KEY", "k")
    monkeypatch.setenv("HF_TOKEN", "t")
    monkeypatch.setenv("DB_PASSWORD", "p")
    monkeypatch.setenv("MY_SETTING", "visible")
    env = capture_env()["environ"]
    assert env["MY_SETTING"] == "visible"
    assert not {"WANDB_API_KEY", "HF_TOKEN", "DB_PASSWORD"} & set(env)
    assert is_secret_name("aws_secret_access_key") and not is_secret_name("PATH")


@pytest.mark.parametrize("url,want", [
    ("https://gitlab.com/api/v4/x?private_token=glpat-abc&page=2",
     "https://gitlab.com/api/v4/x?private_token=***&page=2"),
    ("https://b.blob.core.windows.net/c/f?sv=2022&sig=abc%3D&se=1",
     "https://b.blob.core.windows.net/c/f?sv=2022&sig=***&se=1"),
    ("https://h/cb?code_len=3&access_token=t1#id_token=t2", "https://h/cb?code_len=3&access_token=***#id_token=***"),
    ("https://h/x?key=k&password=p&Signature=s", "https://h/x?key=***&password=***&Signature=***"),
    ("https://u:p@[::1]:8080/x", "https://[::1]:8080/x"),  # brackets kept
    ("https://u:p@host:99999/x", "https://host:99999/x"),  # an out-of-range port: no ValueError
    ("http://u:p@[::1", "http://[::1"),  # unclosed bracket: no ValueError
    ("postgres://u:p@ss@db/x", "postgres://db/x"),  # an unencoded "@" in the password
])
def test_urls_lose_credential_parameters_keep_their_host_and_never_raise(url, want):
    assert scrub_url(url) == want


_SECRET_NAMES = ["DB_PASS", "SMTP_PASS", "PGPASSWORD", "MYSQL_PWD", "DB_PASSWD", "GH_PAT",
                 "SENTRY_DSN", "GOOGLE_APPLICATION_CREDENTIALS", "AWS_SHARED_CREDENTIAL",
                 "GPG_PRIVATE", "BASIC_AUTH", "AUTHORIZATION", "SESSION_COOKIE", "REQUEST_SIGNATURE",
                 "CSRF_TOKEN", "AZURE_STORAGE_CONNECTION_STRING", "OTEL_EXPORTER_OTLP_HEADERS",
                 "aws_secret_access_key", "HF_TOKEN", "OPENAI_API_KEY", "APIKEY", "AccountKey",
                 "AWS_ACCESS_KEY_ID", "SECRET_KEY", "ENCRYPTION_KEY", "--api-key", "KEY"]
_HARMLESS_NAMES = ["PATH", "PWD", "OLDPWD", "HOME", "PYTHONPATH", "LD_LIBRARY_PATH", "USER", "SHELL",
                   "LANG", "TERM", "HOSTNAME", "CUDA_VISIBLE_DEVICES", "OMP_NUM_THREADS",
                   "TOKENIZERS_PARALLELISM", "GIT_AUTHOR_NAME", "SSH_AUTH_SOCK", "XDG_SESSION_ID",
                   "SSL_CERT_FILE", "SIGNAL",
                   # words that only contain a secret word, and hyperparameters about keys
                   "MONKEY", "COMPASS", "BYPASS", "PASSTHROUGH", "CERTAINTY", "KEYBOARD",
                   "num_keys", "--num-keys", "--key-frames", "--num-passes"]


def test_secret_looking_names_are_caught_and_common_harmless_ones_are_not():
    assert [n for n in _SECRET_NAMES if not is_secret_name(n)] == []
    assert [n for n in _HARMLESS_NAMES if is_secret_name(n)] == []


# (variable, value, what must not be stored, what must be) — the integrity review's repro
_ENV_SECRETS = [
    ("DATABASE_URL", "postgres://u:supersecretpw@db/x", "supersecretpw", "postgres://db/x"),
    ("HTTPS_PROXY", "http://bob:proxypw@proxy:3128", "proxypw", "http://proxy:3128"),
    ("PIP_INDEX_URL", "https://user:pypitoken@pypi.example/simple", "pypitoken",
     "https://pypi.example/simple"),
    ("SENTRY_URL", "https://abc123key@o1.ingest.sentry.io/1", "abc123key",
     "https://o1.ingest.sentry.io/1"),
    ("PIP_EXTRA_INDEX_URL", "https://a:pw1@one/simple https://b:pw2@two/simple", "pw2",
     "https://one/simple https://two/simple"),
    ("FEED", "https://gitlab.com/x.atom?private_token=feedtok", "feedtok",
     "https://gitlab.com/x.atom?private_token=***"),
    ("STORAGE", "AccountName=acct;AccountKey=c2VjcmV0==;EndpointSuffix=core", "c2VjcmV0",
     "AccountName=acct;AccountKey=***;EndpointSuffix=core"),
    ("SOME_SETTING", "ghp_" + "A" * 36, "ghp_", "***"),
]


def test_credentials_inside_values_are_removed_whatever_the_variable_is_called(monkeypatch):
    for name, value, _, _ in _ENV_SECRETS:
        monkeypatch.setenv(name, value)
    for name in ("DB_PASS", "GH_PAT", "SMTP_PASS"):
        monkeypatch.setenv(name, f"{name.lower()}-value")
    monkeypatch.setenv("PWD", "/work/dir")
    env = capture_env()["environ"]
    dumped = json.dumps(env)
    for name, _, secret, kept in _ENV_SECRETS:
        assert secret not in dumped, name
        assert env[name] == kept, name
    assert not {"DB_PASS", "GH_PAT", "SMTP_PASS"} & set(env)
    assert env["PWD"] == "/work/dir"  # the working directory, not a password


def test_secret_flags_and_url_credentials_in_argv_are_masked(monkeypatch):
    argv = ["train.py", "--api-key=sk-live-xyz", "--password", "hunter2", "--token=abc",
            "--db-url", "postgres://u:dbpw@db/x", "db.password=hyd", "--lr", "0.1",
            "--tokenizer", "bert-base", "--max-new-tokens", "64", "--use-auth", "--epochs", "3",
            "-p", "8080"]
    monkeypatch.setattr(sys, "argv", argv)
    assert capture_env()["argv"] == [
        "train.py", "--api-key=***", "--password", "***", "--token=***",
        "--db-url", "postgres://db/x", "db.password=***", "--lr", "0.1",
        "--tokenizer", "bert-base", "--max-new-tokens", "64", "--use-auth", "--epochs", "3",
        "-p", "8080"]
    assert scrub_argv(["x.py", "--secret"]) == ["x.py", "--secret"]  # a last flag: nothing to mask


def test_the_signed_run_record_stores_none_of_the_reviews_secrets(data_dir, monkeypatch):
    import assay

    for name, value, _, _ in _ENV_SECRETS:
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("DB_PASS", "dbpass123")
    monkeypatch.setenv("GH_PAT", "ghp_abcdef")
    monkeypatch.setenv("SMTP_PASS", "mailpw")
    monkeypatch.setattr(sys, "argv", ["secrets_env.py", "--api-key=sk-live-xyz",
                                      "--password", "hunter2"])
    with assay.init(project="s", system_metrics_interval=0) as r:
        r.log({"x": 1}, step=0)
    env = assay.Api().run(r.id).env
    dumped = json.dumps(env)
    for secret in ["supersecretpw", "proxypw", "pypitoken", "abc123key", "dbpass123",
                   "ghp_abcdef", "mailpw", "sk-live-xyz", "hunter2", "feedtok"]:
        assert secret not in dumped, secret
    assert env["environ"]["HTTPS_PROXY"] == "http://proxy:3128"
    assert env["argv"][1:] == ["--api-key=***", "--password", "***"]


def _git(cwd, *args):
    subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True)


def _repo(path):
    """A one-commit checkout at ``path`` whose ``train.py`` holds ``lr = 0.1``."""
    _git(path, "init", "-q", "-b", "main")
    _git(path, "config", "user.email", "t@example.com")
    _git(path, "config", "user.name", "t")
    (path / "train.py").write_text("lr = 0.1\n")
    _git(path, "add", ".")
    _git(path, "commit", "-qm", "init")


def test_git_capture_records_commit_branch_dirty_flag_and_diff_blob(tmp_path):
    _repo(tmp_path)
    _git(tmp_path, "remote", "add", "origin", "https://me:secret@example.com/r.git")
    clean = capture_git(str(tmp_path))
    assert clean["branch"] == "main" and len(clean["commit"]) == 40 and clean["dirty"] is False
    assert clean["remote"] == "https://example.com/r.git"
    (tmp_path / "train.py").write_text("lr = 0.2\n")
    blobs: dict[str, bytes] = {}

    def put(data: bytes) -> str:
        blobs["d"] = data
        return "sha256:x"

    dirty = capture_git(str(tmp_path), put)
    assert dirty["dirty"] is True and dirty["diff_blob"] == "sha256:x"
    assert b"-lr = 0.1" in blobs["d"] and b"+lr = 0.2" in blobs["d"]


def test_git_capture_outside_a_repository_is_empty(tmp_path):
    assert capture_git(str(tmp_path)) == {}


class FakeNvml(types.SimpleNamespace):
    """Records every NVML call; the slow ones fail the test if called."""

    NVML_TEMPERATURE_GPU = 0
    NVML_CLOCK_SM = 1

    class NVMLError(Exception):
        pass

    def __init__(self, n=2):
        super().__init__(calls=[], n=n)

    def _rec(self, name):
        self.calls.append(name)

    def nvmlInit(self):
        self._rec("init")

    def nvmlDeviceGetCount(self):
        return self.n

    def nvmlDeviceGetHandleByIndex(self, i):
        return i

    def nvmlDeviceGetUtilizationRates(self, h):
        self._rec("util")
        return types.SimpleNamespace(gpu=50 + h, memory=10)

    def nvmlDeviceGetTemperature(self, h, kind):
        return 60

    def nvmlDeviceGetPowerUsage(self, h):
        return 150_000

    def nvmlDeviceGetClockInfo(self, h, kind):
        return 1410

    def nvmlDeviceGetMemoryInfo(self, h):
        return types.SimpleNamespace(used=2**30, total=80 * 2**30)

    def nvmlDeviceGetPcieThroughput(self, *a):
        raise AssertionError("PCIe throughput blocks ~20 ms: not on the sampling path")

    def nvmlDeviceGetTotalEnergyConsumption(self, *a):
        raise AssertionError("total energy blocks ~4 ms: not on the sampling path")


def test_gpu_probe_reads_fast_fields_of_every_gpu_and_never_slow_ones():
    nv = FakeNvml(n=2)
    out = GpuProbe(nv).sample()
    assert out["sys/gpu.1.utilization_percent"] == 51
    assert out["sys/gpu.0.power_w"] == 150.0 and out["sys/gpu.0.sm_clock_mhz"] == 1410
    assert out["sys/gpu.1.memory_used_mb"] == 1024 and out["sys/gpu.0.memory_total_mb"] == 80 * 1024
    assert out["sys/gpu.0.temperature_c"] == 60


def test_gpu_probe_says_which_gpus_this_process_and_its_children_use():
    """Every run logged every GPU of its host: nothing said which one a trial trained on
    (Ray gives each GPU trial its own)."""
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        class Procs(FakeNvml):
            def nvmlDeviceGetComputeRunningProcesses(self, h):
                P = types.SimpleNamespace
                if h == 0:  # a stranger's job, and our data-loader child
                    return [P(pid=1, usedGpuMemory=5 * 2**30),
                            P(pid=child.pid, usedGpuMemory=2**29)]
                if h == 1:
                    return [P(pid=os.getpid(), usedGpuMemory=3 * 2**30),
                            P(pid=child.pid, usedGpuMemory=None)]  # amount hidden (WDDM)
                if h == 2:
                    return [P(pid=1, usedGpuMemory=2**30)]
                raise self.NVMLError("Not Supported")

        out = GpuProbe(Procs(n=4)).sample()
        assert out["sys/gpu.0.process_memory_used_mb"] == 512
        assert out["sys/gpu.1.process_memory_used_mb"] == 3 * 1024
        assert "sys/gpu.2.process_memory_used_mb" not in out  # not ours
        assert "sys/gpu.3.process_memory_used_mb" not in out  # NVML could not say
        assert out["sys/gpu.3.utilization_percent"] == 53  # the other fields still come
        # A GPU let go reads 0 once (the run's last value must not keep it there), then
        # nothing.
        probe = GpuProbe(Procs(n=4))
        assert probe.sample()["sys/gpu.1.process_memory_used_mb"] == 3 * 1024
        Procs.nvmlDeviceGetComputeRunningProcesses = lambda self, h: []
        assert probe.sample()["sys/gpu.1.process_memory_used_mb"] == 0.0
        assert "sys/gpu.1.process_memory_used_mb" not in probe.sample()
        # A binding without the call (FakeNvml has none): the key is simply absent.
        assert not any(k.endswith("process_memory_used_mb") for k in GpuProbe(FakeNvml()).sample())
    finally:
        child.kill()
        child.wait()


def test_gpu_probe_without_nvml_is_silent():
    class Broken:
        def nvmlInit(self):
            raise RuntimeError("NVML Shared Library Not Found")

    probe = GpuProbe(Broken())
    assert not probe.available and probe.sample() == {}
    assert GpuProbe().sample() == {}  # the real pynvml on this GPU-less machine


def test_system_sampler_reports_cpu_memory_and_io_rates():
    got = []
    s = SystemSampler(got.append, 1.0, gpu=GpuProbe(FakeNvml(n=1)))
    s.sample()
    m = s.sample()
    assert m["sys/memory.process_rss_mb"] > 1 and 0 <= m["sys/cpu.system_percent"] <= 100
    assert "sys/disk.read_mb_s" in m and "sys/network.sent_mb_s" in m
    assert m["sys/gpu.0.utilization_percent"] == 50


def test_a_run_shorter_than_its_capture_still_records_the_code_it_started_in(tmp_path,
                                                                             data_dir,
                                                                             monkeypatch):
    import assay

    code = tmp_path / "code"
    code.mkdir()
    _repo(code)
    (code / "train.py").write_text("lr = 0.01\n")
    monkeypatch.chdir(code)
    run = assay.init(project="cap", system_metrics_interval=0)
    monkeypatch.chdir(tmp_path)  # the script moves on at once: capture must use the start cwd
    run.finish()
    rec = assay.Api().run(run.id)
    assert rec.git["dirty"] is True and rec.git["diff_blob"]
    assert rec.env["python"]


def test_hyperparameter_flags_and_prose_are_not_masked():
    """Masking is written into the signed record and cannot be undone: flags about keys,
    sessions or auth settings, and ordinary words after "Token"/"Basic", must stay (a
    regression review found --key-dim 64 and "Token ring network" masked)."""
    from assay.sdk.capture import scrub_argv, scrub_text

    argv = ["t.py", "--key-dim", "64", "--num-keys", "8", "--passages", "10",
            "model.key_dim=64", "--session-len", "5", "--use-auth", "true",
            "--max-new-tokens", "10", "--api-key", "X", "--hf-token", "hf_x",
            "db.password=zz", "--password-file", "/p"]
    assert scrub_argv(argv) == [
        "t.py", "--key-dim", "64", "--num-keys", "8", "--passages", "10",
        "model.key_dim=64", "--session-len", "5", "--use-auth", "true",
        "--max-new-tokens", "10", "--api-key", "***", "--hf-token", "***",
        "db.password=***", "--password-file", "***"]
    text = "basic stuff; Token ring network; token authentication enabled"
    assert scrub_text(text) == text
    assert scrub_text("Authorization: Bearer abc123def456ghi7") == "Authorization: Bearer ***"
    assert scrub_text("Basic dXNlcjpwYXNzMTIzNA==") == "Basic ***"
