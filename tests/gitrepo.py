"""A throwaway git checkout with an uncommitted change, for tests of git capture."""

from __future__ import annotations

import subprocess
from pathlib import Path

GIT = ["git", "-c", "user.email=tests@localhost", "-c", "user.name=assay-tests"]


def dirty_checkout(root: Path, committed: str, changed: str, name: str = "train.py") -> Path:
    """``root`` as a repository whose ``name`` was committed as ``committed`` and now holds
    ``changed`` (so ``git diff HEAD`` shows the change)."""
    root.mkdir(parents=True, exist_ok=True)
    subprocess.run([*GIT, "init", "-q"], cwd=root, check=True)
    (root / name).write_text(committed)
    subprocess.run([*GIT, "add", "."], cwd=root, check=True)
    subprocess.run([*GIT, "commit", "-qm", "initial"], cwd=root, check=True)
    (root / name).write_text(changed)
    return root
