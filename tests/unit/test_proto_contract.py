"""The backend contract (proto/telematics/v1) passes `buf lint` with only the exceptions buf.yaml
writes down, and `buf breaking` finds no change that breaks a v1 client since the baseline."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BUF = ROOT / ".tools" / "node_modules" / ".bin" / "buf"
# The v1 baseline: main on 2026-11-28, the contract as the gateway's clients were built against it
# (there is no release tag yet, and a tag would not reach every fresh clone). A commit of main is
# in every full clone. Moves only with a deliberate new release of the contract (README
# "Contract checks").
BASELINE = "aa845c672cd1cb8fd2cf5154ba6cb7281cfcc507"


def _buf() -> str:
    if BUF.exists():
        return str(BUF)
    if shutil.which("npm") is None:
        pytest.skip("npm is not installed, so buf is not (scripts/bootstrap.sh installs it with npm)")
    pytest.fail("buf is missing from .tools/: run `make setup` (scripts/bootstrap.sh dev installs it)")


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([_buf(), *args], cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_buf_lint_finds_nothing_beyond_the_written_exceptions() -> None:
    done = _run("lint")
    assert done.returncode == 0, done.stdout + done.stderr


def test_no_breaking_change_against_the_v1_baseline() -> None:
    present = subprocess.run(["git", "cat-file", "-e", f"{BASELINE}^{{commit}}"], cwd=ROOT,
                             capture_output=True)
    assert present.returncode == 0, (
        f"baseline commit {BASELINE} is not in this clone (shallow?): `git fetch --unshallow`")
    done = _run("breaking", "--against", f".git#ref={BASELINE},subdir=proto")
    assert done.returncode == 0, done.stdout + done.stderr
