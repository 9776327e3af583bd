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
from urllib.parse import unquote

__all__ = [
    "capture_env",
    "capture_git",
    "current_seed",
    "is_secret_name",
    "scrub_argv",
    "scrub_environ",
    "scrub_text",
    "scrub_url",
    "seed",
]

# Names that may hold a secret (compared with Sentry's default denylist, Django's
# HIDDEN_SETTINGS and what CI systems mask): matched anywhere in the name, case-insensitively.
# A few spellings that are common and harmless are cut out by lookarounds (TOKENIZERS_*,
# GIT_AUTHOR_*, --num-passes, --keypoints), and PAT and SIG only match as whole words
# (GH_PAT, ?sig=) so PATH, PYTHONPATH and SIGNAL do not.
_SECRET = re.compile(
    # KEY as a word of its own (API_KEY, --api-key, AWS_ACCESS_KEY_ID) or glued to what makes
    # it one (APIKEY, AccountKey), never a word that merely contains it (MONKEY) nor
    # hyperparameters about keys (--num-keys, --key-frames); PASS likewise (DB_PASS, not
    # COMPASS, BYPASS, PASSTHROUGH or --num-passes).
    r"(?:(?<![A-Z])|API|ACCESS|ACCOUNT|SECRET|PRIVATE|SIGNING|MASTER|ENCRYPTION)KEY"
    r"(?![A-Z]|[-_.](?:FRAMES?|POINTS?|BOARD|WORDS?|CODES?|MAP|SPACE|COLUMNS?)(?![A-Z]))"
    r"|TOKEN(?!I[SZ])|SECRET|PASSW(?:OR)?D|(?<![A-Z])PASS(?![A-Z])|PWD"
    r"|CREDENTIAL|AUTH(?!OR(?!I[SZ]))|PRIVATE|SESSION|COOKIE|SIGNATURE|CERT(?!AIN)|DSN|CSRF"
    r"|XSRF|JWT|BEARER|HEADERS|CONN(?:ECTION)?[_.\-]?STR"
    r"|(?<![A-Z])(?:PAT|SIG)(?![A-Z])",
    re.IGNORECASE,
)
# Common names the pattern above catches that hold no secret (directories, socket paths,
# desktop session ids, CA bundles).
_HARMLESS = re.compile(
    r"(?:OLD)?PWD|SSH_AUTH_SOCK|XAUTHORITY|SSL_CERT_(?:FILE|DIR)|DESKTOP_SESSION"
    r"|XDG_SESSION_[A-Z]+|DBUS_SESSION_BUS_ADDRESS",
    re.IGNORECASE,
)
_TOKEN_COUNTS = re.compile(  # --max-new-tokens, NUM_TOKENS: lengths, not credentials
    r"(?<![A-Z])(?:(?:MAX|MIN|NUM)[-_.]?(?:NEW[-_.]?)?TOKENS?|N[-_.]?TOKENS)(?![A-Z])",
    re.IGNORECASE,
)
_MASK = "***"
# scheme://userinfo@ — the userinfo (a user name that may itself be a key, as in a Sentry DSN
# or https://<token>@github.com, and a password) is dropped. Greedy up to the last "@" before
# the path, so an unencoded "@" in a password does not leave its tail behind.
_USERINFO = re.compile(r"([A-Za-z][A-Za-z0-9+.\-]*://)[^/?#\s\"'<>]*@")
# name=value pairs (URL query and fragment parameters, key=value;... connection strings,
# --flag=value, hydra-style a.b=value): the value is masked when the name looks secret.
_PAIR = re.compile(r"(?:^|(?<=[\s?&;#,]))([+~]{0,2}-{0,2}[\w.\-\[\]%]+)=([^&;#\s,\"']*)")
# Tokens recognisable by their form whatever they are stored under.
_TOKEN_FORMS = re.compile(
    r"\b(?:gh[pousr]_[A-Za-z0-9]{20,}|github_pat_[A-Za-z0-9_]{20,}|glpat-[A-Za-z0-9_\-]{20,}"
    r"|xox[abposr]-[A-Za-z0-9\-]{10,}|hf_[A-Za-z0-9]{30,}|sk-[A-Za-z0-9_\-]{20,}"
    r"|A[KS]IA[0-9A-Z]{16}|eyJ[A-Za-z0-9_\-]{8,}\.eyJ[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]*)"
)
# A credential after an HTTP auth scheme: long and word-like, not prose ("Token ring").
_AUTH_SCHEME = re.compile(
    r"\b((?i:Bearer|Basic|Token))\s+(?=[^\s,;\"']*[^a-z\s,;\"'])[A-Za-z0-9._~+/=-]{12,}")
_seed: int | None = None


def is_secret_name(name: str) -> bool:
    """Whether an environment variable, flag or parameter name may hold a secret.

    Such environment variables are never recorded, and such flags' and parameters' values
    are masked.
    """
    if _HARMLESS.fullmatch(name):
        return False
    return bool(_SECRET.search(_TOKEN_COUNTS.sub("", name)))


_PARAM_WORD = re.compile(r"[-_.\s]+|(?<=[a-z])(?=[A-Z])")
_SECRET_LAST = {"key", "apikey", "token", "secret", "password", "passwd", "pass", "pwd",
                "pat", "dsn", "credential", "credentials", "cookie", "jwt", "bearer", "sig",
                "signature", "accountkey"}
_SECRET_ANY = {"password", "passwd", "secret", "credential", "credentials", "apikey", "token"}


def is_secret_param(name: str) -> bool:
    """Whether a flag's or ``name=value`` parameter's value may be a secret: its last word
    names one (``--api-key``, ``db.password``, ``AccountKey``, ``--hf-token``), or a word
    anywhere is unambiguous (``--password-file``). Stricter than :func:`is_secret_name`
    (which drops environment variables): a command line keeps its hyperparameters, so
    ``--key-dim 64``, ``--num-keys 8``, ``--session-len`` or ``--use-auth`` stay readable."""
    words = [w.lower() for w in _PARAM_WORD.split(_TOKEN_COUNTS.sub("", name.strip("+~-")))
             if w]
    if not words:
        return False
    return words[-1] in _SECRET_LAST or any(w in _SECRET_ANY for w in words)


def _mask_pair(m: re.Match[str]) -> str:
    name, value = m.group(1), m.group(2)
    if value and is_secret_param(unquote(name)):
        return f"{name}={_MASK}"
    return m.group(0)


def scrub_text(text: str) -> str:
    """``text`` without the secrets it visibly carries: URL credentials (``user:pass@``),
    secret-looking parameters (``?private_token=…``, ``password=…;``, ``--api-key=…``),
    ``Bearer …`` credentials and tokens of well-known forms (``ghp_…``, ``sk-…``, JWTs).

    Never raises; a value holding a PEM private key is masked whole.
    """
    try:
        if "PRIVATE KEY-----" in text:
            return _MASK
        text = _USERINFO.sub(r"\1", text)
        text = _AUTH_SCHEME.sub(lambda m: f"{m.group(1)} {_MASK}", text)
        text = _PAIR.sub(_mask_pair, text)
        return _TOKEN_FORMS.sub(_MASK, text)
    except Exception:  # noqa: BLE001 - capture must never fail init: keep nothing rather
        return _MASK


def scrub_url(url: str) -> str:
    """Remove credentials from a URL: the userinfo (``https://user:token@host/x`` ->
    ``https://host/x``) and the values of secret-looking query and fragment parameters
    (``?private_token=…`` -> ``?private_token=***``). The host (IPv6 brackets, any port,
    valid or not) is kept as written. Never raises.
    """
    if "://" not in url:
        return url  # scp-like "git@host:path": a user name, never a password
    return scrub_text(url)


def scrub_argv(argv: list[str]) -> list[str]:
    """The command line with secrets masked: the value of a long flag whose name looks
    secret (``--api-key X``, ``--api-key=X``, ``--password X``), secret-looking ``name=value``
    arguments (``db.password=X``), URL credentials and well-known token forms."""
    out: list[str] = []
    mask_next = False
    for arg in argv:
        if mask_next and not arg.startswith("--"):
            out.append(_MASK)
            mask_next = False
            continue
        mask_next = (arg.startswith("--") and "=" not in arg and len(arg) > 2
                     and is_secret_param(arg[2:]))
        out.append(scrub_text(arg))
    return out


def scrub_environ(environ: dict[str, str]) -> dict[str, str]:
    """Environment variables minus secret-looking names, other values scrubbed (sorted)."""
    return {k: scrub_text(v) for k, v in sorted(environ.items()) if not is_secret_name(k)}


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


def capture_git(cwd: str,
                put_blob: Callable[[bytes], str | None] | None = None) -> dict[str, Any]:
    """Commit, branch, scrubbed remote, dirty flag and the diff of tracked changes.

    The diff (``git diff HEAD``: staged and unstaged changes to tracked files) is stored
    through ``put_blob`` and referenced by its digest (None when it could not be stored).
    Returns ``{}`` outside a repository.
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
    """Python, OS, host, CPUs, GPUs, packages, command line, working dir, env vars.

    Scrubbed here, before anything is written (the env is part of the signed record):
    variables with secret-looking names are left out, credentials inside the other values
    and the command line are masked (:func:`scrub_environ`, :func:`scrub_argv`).
    """
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
        "argv": scrub_argv(list(sys.argv)),
        "cwd": os.getcwd(),
        "environ": scrub_environ(dict(os.environ)),
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
    from .lifecycle import _active_runs

    for r in list(_active_runs):
        r._record_env_update({"seed": n})
    return n


def current_seed() -> int | None:
    return _seed
