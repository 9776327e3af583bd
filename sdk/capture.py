"""What a run records about where it ran: git state, environment, packages, seeds."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import random
import re
import socket
import subprocess
import sys
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit, urlunsplit

__all__ = ["capture_env", "capture_git", "current_seed", "is_secret_name", "scrub_url", "seed"]

_SECRET = re.compile(
    r"KEY|TOKEN|SECRET|PASSW|PWD|CREDENTIAL|AUTH|PRIVATE|SESSION|COOKIE|SIGNATURE|CERT|DSN",
    re.IGNORECASE,
)
_seed: int | None = None


def is_secret_name(name: str) -> bool:
    """Environment variable names that may hold secrets are never recorded."""
    return bool(_SECRET.search(name))


def scrub_url(url: str) -> str:
    """Remove credentials from a remote URL (``https://user:token@host/x`` -> ``https://host/x``)."""
    if "://" not in url:
        return url  # scp-like "git@host:path": a user name, never a password
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment))


def _git(args: list[str], cwd: str) -> str | None:
    try:
        out = subprocess.run(
            ["git", *args], cwd=cwd, capture_output=True, timeout=10, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode != 0:
        return None
    return out.stdout.decode(errors="replace")


def capture_git(cwd: str, put_blob: Callable[[bytes], str] | None = None) -> dict[str, Any]:
    """Commit, branch, scrubbed remote, dirty flag and the diff of tracked changes.

    The diff (``git diff HEAD``: staged and unstaged changes to tracked files) is stored
    through ``put_blob`` and referenced by its digest. Returns ``{}`` outside a repository.
    """
    top = _git(["rev-parse", "--show-toplevel"], cwd)
    if top is None:
        return {}
    info: dict[str, Any] = {"root": top.strip()}
    commit = _git(["rev-parse", "HEAD"], cwd)
    info["commit"] = commit.strip() if commit else None
    branch = _git(["rev-parse", "--abbrev-ref", "HEAD"], cwd)
    info["branch"] = branch.strip() if branch else None
    remote = _git(["remote", "get-url", "origin"], cwd)
    info["remote"] = scrub_url(remote.strip()) if remote else None
    status = _git(["status", "--porcelain", "--untracked-files=no"], cwd)
    info["dirty"] = bool(status and status.strip())
    if info["dirty"] and info["commit"]:
        diff = _git(["diff", "HEAD", "--binary"], cwd)
        if diff:
            data = diff.encode()
            info["diff_bytes"] = len(data)
            info["diff_blob"] = put_blob(data) if put_blob else None
    return info


def _gpu_names() -> list[str]:
    try:
        import pynvml

        pynvml.nvmlInit()
    except Exception:  # noqa: BLE001 - NVMLError or ImportError (no driver, no GPU): no GPUs
        return []
    try:
        names = []
        for i in range(pynvml.nvmlDeviceGetCount()):
            n = pynvml.nvmlDeviceGetName(pynvml.nvmlDeviceGetHandleByIndex(i))
            names.append(n.decode() if isinstance(n, bytes) else str(n))
        return names
    except Exception:  # noqa: BLE001 - a GPU that will not say its name: capture goes on
        return []


def capture_env() -> dict[str, Any]:
    """Python, OS, host, CPUs, GPUs, packages, command line, working dir, safe env vars."""
    pkgs = sorted(
        {f"{d.metadata['Name']}=={d.version}" for d in importlib.metadata.distributions()
         if d.metadata["Name"]},
        key=str.lower,
    )
    return {
        "python": sys.version.split()[0],
        "python_executable": sys.executable,
        "os": platform.platform(),
        "hostname": socket.gethostname(),
        "cpu_count": os.cpu_count(),
        "gpus": _gpu_names(),
        "packages": pkgs,
        "argv": list(sys.argv),
        "cwd": os.getcwd(),
        "environ": {k: v for k, v in sorted(os.environ.items()) if not is_secret_name(k)},
        "seed": _seed,
    }


def seed(n: int) -> int:
    """Seed ``random``, NumPy and (if imported) PyTorch, and record the seed on runs.

    Call it after importing torch so torch's generators are seeded too. Returns ``n``.
    """
    global _seed
    if isinstance(n, bool) or not isinstance(n, int) or not 0 <= n < 2**32:
        from ..errors import UserInputError

        raise UserInputError(f"seed must be an int in [0, 2**32), got {n!r}",
                             hint="pass e.g. assay.seed(0)")
    random.seed(n)
    try:
        import numpy as np

        np.random.seed(n)
    except ImportError:
        pass
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.manual_seed(n)
    _seed = n
    from .run import _active_runs

    for r in list(_active_runs):
        r._record_env_update({"seed": n})
    return n


def current_seed() -> int | None:
    return _seed
