"""Architecture rules for the policies package (see DESIGN.md): pure logic, no Ray,
LanceDB, FastAPI or HTTP; siblings imported relatively or as ``assay.x``."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FORBIDDEN = {"ray", "lancedb", "fastapi", "starlette", "uvicorn", "httpx", "requests", "pyarrow"}
SIBLINGS = {"policies", "store", "sdk", "scheduler", "agents", "api", "simulations", "errors"}


def _imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.append(node.module)
    return names


@pytest.mark.parametrize("path", sorted((ROOT / "policies").rglob("*.py")), ids=lambda p: p.name)
def test_policies_module_imports_no_infrastructure(path):
    top = {name.split(".")[0] for name in _imports(path)}
    assert not top & FORBIDDEN, f"{path.name} imports {top & FORBIDDEN}"
    assert not top & SIBLINGS, f"{path.name} imports a sibling absolutely: {top & SIBLINGS}"


def test_policies_never_import_simulations():
    for path in (ROOT / "policies").rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and "simulations" in node.module:
                pytest.fail(f"{path.name} imports simulations (policies sit below them)")
