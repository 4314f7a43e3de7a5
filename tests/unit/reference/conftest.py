from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from gateway.reference import ReferenceData, load_reference

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO


@pytest.fixture(scope="session")
def ref() -> ReferenceData:
    return load_reference(REPO)


@pytest.fixture
def data_copy(tmp_path: Path) -> Path:
    """A writable copy of the shipped data, for breaking files on purpose."""
    for folder in ("sim_profiles", "roaming"):
        shutil.copytree(REPO / folder, tmp_path / folder)
    return tmp_path
