"""`mypy --strict` over the gateway, the tests and the load tools (run by `make lint` and `make test`).

Why a script and not one `mypy gateway tests load`: pytest's default import mode puts the folder of
every test file on sys.path, so each `conftest.py` is a top-level module named `conftest`. mypy sees
them as one module defined twice ("Duplicate module named conftest") and stops. Fixtures are never
imported by name, so checking each conftest.py in a run of its own loses nothing; everything else is
checked in one run. The import bases (`mypy_path`, `explicit_package_bases`) are in pyproject.toml.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TARGETS = ("gateway", "tests", "load", "scripts")


def _python_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*.py") if "_gen" not in p.parts)


def runs() -> list[list[str]]:
    """The mypy runs: everything but the conftest files, then one run per conftest file."""
    files = [p for t in TARGETS for p in _python_files(ROOT / t)]
    conftests = [p for p in files if p.name == "conftest.py"]
    rest = [p for p in files if p.name != "conftest.py"]
    rel = [str(p.relative_to(ROOT)) for p in rest]
    return [rel] + [[str(p.relative_to(ROOT))] for p in conftests]


def main() -> int:
    failed = 0
    for files in runs():
        # --strict on the command line too: the config says so, but the gate must not depend on it.
        cmd = [sys.executable, "-m", "mypy", "--strict", *files]
        failed |= subprocess.run(cmd, cwd=ROOT, check=False).returncode
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
