"""The quick start (README "Try it from outside") runs the simulator right after `make run`,
which installs only the runtime dependencies: every package the simulator imports must come
with those or with the small `sim` extra the README installs, never only with `[dev]`."""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
LOCAL = ("gateway", "load")


def _name(requirement: str) -> str:
    """'aiomqtt==2.5.1  # ...' -> 'aiomqtt' (PEP 503 normalized)."""
    match = re.match(r"[A-Za-z0-9._-]+", requirement.strip())
    assert match is not None, requirement
    return re.sub(r"[-_.]+", "-", match.group()).lower()


def _module_file(module: str) -> Path | None:
    base = ROOT.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.exists():
            return candidate
    return None


def third_party_imports(entry: str) -> set[str]:
    """Top-level names of the non-project modules imported by ``entry`` and, transitively, by
    every project module it imports (lazy imports inside functions included)."""
    seen: set[str] = set()
    outside: set[str] = set()
    todo = [entry]
    while todo:
        module = todo.pop()
        path = _module_file(module)
        if module in seen or path is None:
            continue
        seen.add(module)
        for node in ast.walk(ast.parse(path.read_text())):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            for name in names:
                top = name.split(".")[0]
                if top in LOCAL:
                    todo.append(name)
                elif top not in sys.stdlib_module_names and top != "__future__":
                    outside.add(top)
    return outside


def test_the_simulator_needs_only_the_runtime_dependencies_and_the_sim_extra() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    allowed = {_name(r) for r in project["dependencies"]}
    allowed |= {_name(r) for r in project["optional-dependencies"].get("sim", [])}
    dists = packages_distributions()
    needed = {
        top: {_name(d) for d in dists.get(top, [top])} for top in third_party_imports("load.sim")
    }
    missing = {top: sorted(names) for top, names in needed.items() if not names & allowed}
    assert not missing, f"load.sim imports packages only [dev] installs: {missing}"


def test_the_sim_extra_pins_what_the_dev_extra_pins() -> None:
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    dev = {_name(r): r.split("#")[0].strip() for r in extras["dev"]}
    for requirement in extras.get("sim", []):
        assert dev.get(_name(requirement)) == requirement.split("#")[0].strip()
