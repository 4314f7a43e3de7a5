"""`telematics-gateway --version` (and `python -m gateway --version`) prints the version of
pyproject.toml, the same one gateway_build_info carries."""

from __future__ import annotations

import subprocess
import sys
import tomllib

import pytest

from gateway.cli import main
from gateway.config import PROJECT_ROOT
from gateway.metrics import Metrics


def _project_version() -> str:
    version: str = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["project"]["version"]
    return version


def test_version_prints_the_project_version_and_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0
    assert capsys.readouterr().out.strip() == f"telematics-gateway {_project_version()}"


def test_python_m_gateway_answers_version_without_a_configuration() -> None:
    done = subprocess.run([sys.executable, "-m", "gateway", "--version"], capture_output=True, text=True,
                          timeout=60, cwd=PROJECT_ROOT)
    assert (done.returncode, done.stdout.strip()) == (0, f"telematics-gateway {_project_version()}")


def test_the_build_info_series_carries_the_same_version() -> None:
    (family,) = [f for f in Metrics().registry.collect() if f.name == "gateway_build_info"]
    (sample,) = family.samples
    assert sample.labels["version"] == _project_version()
    assert sample.labels["python"] == ".".join(map(str, sys.version_info[:3]))
