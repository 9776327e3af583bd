"""Packages export heavy names lazily: importing them loads none of the heavy libraries,
the names resolve on first use, and an unknown name is an AttributeError."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

HEAVY = ("polars", "lancedb", "pyarrow", "torch", "botorch", "optuna", "sklearn", "ray")


def _run(code: str) -> str:
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                         text=True, timeout=120, check=True)
    return out.stdout.strip()


def test_importing_the_packages_loads_no_heavy_library():
    loaded = _run(f"""
        import sys
        import assay, assay.policies, assay.scheduler, assay.agents, assay.simulations
        print(sorted(m for m in {HEAVY!r} if m in sys.modules))
    """)
    assert loaded == "[]"


def test_the_command_line_starts_without_the_servers_libraries():
    """helper-67: every `assay` command, --help included, took 2-7 s: the command line
    imported assay.api, whose package loaded FastAPI and LanceDB."""
    loaded = _run(f"""
        import sys
        import assay.cli, assay.api
        print(sorted(m for m in {(*HEAVY, "fastapi", "uvicorn")!r} if m in sys.modules))
    """)
    assert loaded == "[]"


@pytest.mark.parametrize(("package", "name", "module"), [
    ("assay.api", "create_app", "assay.api.app"),
    ("assay", "Api", "assay.sdk.api"),
    ("assay", "uniform", "assay.policies.space"),
    ("assay.sdk", "Api", "assay.sdk.api"),
    ("assay.agents", "Agent", "assay.agents.agent"),
    ("assay.policies", "LearnedStopper", "assay.policies.stoppers.learned"),
    ("assay.scheduler", "StoreMetricSource", "assay.scheduler.metrics"),
    ("assay.simulations", "DIGITS_SPACE", "assay.simulations.digits"),
])
def test_a_lazy_name_resolves_to_the_real_object_and_is_cached(package, name, module):
    import importlib

    pkg = importlib.import_module(package)
    value = getattr(pkg, name)
    assert value is getattr(importlib.import_module(module), name)
    assert name in vars(pkg)  # the next lookup is a plain attribute


@pytest.mark.parametrize("package", ["assay", "assay.sdk", "assay.policies", "assay.scheduler",
                                     "assay.agents", "assay.simulations"])
def test_an_unknown_name_is_an_attribute_error_naming_the_package(package):
    import importlib

    pkg = importlib.import_module(package)
    with pytest.raises(AttributeError, match=f"module '{package}' has no attribute 'nope'"):
        pkg.nope  # noqa: B018
