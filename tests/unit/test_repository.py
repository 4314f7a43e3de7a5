"""The repository stands on its own and stays free of cruft (checked on the tracked files)."""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
THIS = Path(__file__).resolve().relative_to(ROOT).as_posix()
REFERENCE_RESULTS = [
    "load/results/reference/issue12-multiprocess.json",  # issue 12's targets (README "Benchmarks")
    "load/results/reference/issue12-multiprocess.png",
    "load/results/reference/issue12-overload.json",
    "load/results/reference/issue12-restart-storm.json",
    "load/results/reference/issue12-restart-storm.png",
    "load/results/reference/issue12-soak.json",
    "load/results/reference/issue12-soak.png",
    "load/results/reference/issue12-steady-qos0.json",
    "load/results/reference/issue12-steady-qos0.png",
    "load/results/reference/issue12-steady-qos1.json",
    "load/results/reference/issue12-steady-qos1.png",
    "load/results/reference/steady-20261124-234702.json",
    "load/results/reference/steady-pg-20261128-105013.json",  # + PostgreSQL, two gateways
]


def tracked() -> list[str]:
    try:
        done = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    return [p for p in done.stdout.decode().split("\0") if p and (ROOT / p).is_file()]


def test_no_tracked_file_points_outside_the_repository() -> None:
    # Built from parts so this file does not match itself.
    outside = re.compile("|".join(["\\.\\./" + "shared", "/" + "work/", "/" + "Users/", "/tmp/" + "venv",
                                   "/" + "home/(?!gateway)"]))  # /home/gateway: the Dockerfile's user
    hits = []
    for path in tracked():
        if path == THIS or path.endswith((".png", ".db")):
            continue
        for n, line in enumerate((ROOT / path).read_text(errors="replace").splitlines(), 1):
            if outside.search(line):
                hits.append(f"{path}:{n}: {line.strip()}")
    assert hits == []


def test_no_editor_or_patch_leftovers_are_tracked_and_git_ignores_them() -> None:
    leftovers = re.compile(r"(\.orig|\.rej|~|\.swp|\.swo)$")
    assert [p for p in tracked() if leftovers.search(p)] == []
    probe = ["gateway/x.py.orig", "gateway/x.py.rej", "gateway/x.py~", "gateway/.x.py.swp"]
    done = subprocess.run(["git", "check-ignore", *probe], cwd=ROOT, capture_output=True, text=True)
    assert done.stdout.split() == probe


def test_benchmark_output_is_ignored_except_the_reference_results_the_readme_cites() -> None:
    results = [p for p in tracked() if p.startswith("load/results/")]
    assert sorted(results) == REFERENCE_RESULTS
    readme = (ROOT / "README.md").read_text()
    for result in REFERENCE_RESULTS:
        assert Path(result).name in readme, result
        if not result.endswith(".json"):
            continue
        doc = json.loads((ROOT / result).read_text())
        assert doc["scenario"] in ("steady", "soak", "overload", "restart_storm"), result
        if doc["scenario"] == "steady":
            assert "gateway/reference" in doc["ratios"]
    probe = ["load/results/latest.json", "load/results/latest.png", "load/results/smoke/latest.json",
             "load/results/bench-20990101-000000.json"]
    done = subprocess.run(["git", "check-ignore", *probe], cwd=ROOT, capture_output=True, text=True)
    assert done.stdout.split() == probe


def test_pyproject_uses_an_spdx_license_string_with_a_setuptools_that_supports_it() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert pyproject["project"]["license"] == "Apache-2.0"
    # PEP 639 license expressions need setuptools >= 77.
    assert "setuptools>=77.0.0" in pyproject["build-system"]["requires"]


def _third_party_imports(package: Path) -> set[str]:
    names: set[str] = set()
    for source in package.rglob("*.py"):
        if "_gen" in source.parts:
            continue
        for node in ast.walk(ast.parse(source.read_text())):
            if isinstance(node, ast.Import):
                names.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    return {n for n in names if n not in sys.stdlib_module_names and n not in ("gateway", "__future__")}


def _normal(name: str) -> str:  # PEP 503 name normalisation
    return re.sub(r"[-_.]+", "-", name).lower()


def test_the_gateway_imports_only_runtime_dependencies_so_make_run_needs_no_dev_extras() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    runtime = {_normal(re.split(r"[=<>\[ ]", d)[0]) for d in pyproject["project"]["dependencies"]}
    dists = packages_distributions()
    for module in _third_party_imports(ROOT / "gateway"):
        provided_by = {_normal(d) for d in dists.get(module, [])}
        assert provided_by & runtime, f"gateway imports {module} ({provided_by}), not a runtime dependency"


def test_make_run_sets_up_the_runtime_level_and_make_test_the_dev_level() -> None:
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^run: setup-run$", makefile, re.M)
    assert re.search(r"^setup-run:\n\t@bash scripts/bootstrap.sh run$", makefile, re.M)
    assert re.search(r"^setup:\n\t@bash scripts/bootstrap.sh dev$", makefile, re.M)
    assert re.search(r"^test: setup$", makefile, re.M)
