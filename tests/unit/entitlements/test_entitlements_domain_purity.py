"""gateway/entitlements/domain/ is the pure core: importing any of its modules loads no asyncio,
no protobuf and no database driver, not even through what it imports in turn."""

from __future__ import annotations

import json
import pkgutil
import subprocess
import sys

import pytest

import gateway.entitlements.domain as domain

FORBIDDEN = ("asyncio", "google.protobuf", "gateway._gen", "sqlite3", "asyncpg", "grpc")

MODULES = sorted(f"{domain.__name__}.{m.name}" for m in pkgutil.iter_modules(domain.__path__))

# A fresh interpreter: this test process has imported everything already.
_PROBE = """
import importlib, json, sys
importlib.import_module(sys.argv[1])
forbidden = json.loads(sys.argv[2])
print(json.dumps(sorted(m for m in sys.modules if any(m == f or m.startswith(f + ".") for f in forbidden))))
"""


def test_the_domain_package_has_the_modules_the_readme_names() -> None:
    assert {m.rsplit(".", 1)[1] for m in MODULES} >= {
        "types", "terms", "lifecycle", "eligibility", "explain", "offer",
    }  # fmt: skip


@pytest.mark.parametrize("module", MODULES)
def test_domain_module_imports_no_io(module: str) -> None:
    out = subprocess.run(
        [sys.executable, "-c", _PROBE, module, json.dumps(FORBIDDEN)],
        capture_output=True, text=True, check=True, timeout=60,
    )  # fmt: skip
    assert json.loads(out.stdout) == [], f"{module} loads I/O modules"
