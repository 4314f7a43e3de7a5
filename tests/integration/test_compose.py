"""docker-compose.yml (two gateways, PostgreSQL, one broker) is valid without a container
engine to start it: the file against the Compose specification, its references, the init
script run for real (the real CLI makes the secrets), the gateway instances' environment as
configuration, and the broker's configuration on a real Mosquitto (a car with a certificate from
the init CA reaches a gateway logged in with the init password; a car without one is refused),
and the monitoring: Prometheus scrapes both gateways, Grafana's provisioning files and the
dashboard they name are the repository's.
"""

from __future__ import annotations

import asyncio
import getpass
import json
import os
import re
import shutil
import ssl
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiomqtt
import pytest
import yaml
from compose_spec import PyCompose
from support import free_port

from gateway import topics
from gateway.config import load_config
from gateway.security import pki

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
DEPLOY = ROOT / "deploy" / "compose"
VIN = "WP0ZZZ99ZJS740001"
GATEWAYS = ("gateway-1", "gateway-2")


def compose() -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())  # anchors and merge keys expanded
    return doc


def test_the_compose_file_follows_the_compose_specification() -> None:
    spec = PyCompose.from_json(json.dumps(compose()))
    assert spec.service_names() == ["init", "postgres", "broker", "nats", *GATEWAYS, "prometheus", "grafana"]


def test_a_compose_file_against_the_specification_is_refused_when_wrong() -> None:
    # The check above can fail: a misspelt key and a bad duration are refused.
    doc = compose()
    doc["services"]["postgres"]["healthcheck"]["interval"] = "soon"
    with pytest.raises(ValueError, match="duration"):
        PyCompose.from_json(json.dumps(doc))
    doc = compose()
    doc["services"]["broker"]["imagee"] = "x"
    with pytest.raises(ValueError, match="imagee"):
        PyCompose.from_json(json.dumps(doc))


def test_every_reference_in_the_compose_file_resolves() -> None:
    doc = compose()
    services = doc["services"]
    for name, service in services.items():
        for dep, cond in service.get("depends_on", {}).items():
            assert dep in services, f"{name} depends on unknown {dep}"
            if cond["condition"] == "service_healthy":
                assert "healthcheck" in services[dep], f"{name} waits for {dep}'s health, which has no check"
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            if source.startswith("./"):
                assert (ROOT / source).exists(), f"{name} mounts missing {source}"
            else:
                assert source in doc["volumes"], f"{name} mounts undeclared volume {source}"
    published = [p.rsplit(":", 1)[0] for s in services.values() for p in s.get("ports", [])]
    assert len(published) == len(set(published))
    assert services["init"]["build"] == "."  # the image the others run is built once, here


def _mounts(service: str) -> dict[str, Path]:
    """A service's bind mounts: container path -> the repository path it shows."""
    mounts: dict[str, Path] = {}
    for volume in compose()["services"][service]["volumes"]:
        source, target = volume.split(":")[:2]
        if source.startswith("./"):
            mounts[target] = ROOT / source
    return mounts


def _in_container(mounts: dict[str, Path], path: str) -> Path:
    """The repository file a container path shows through a bind mount (AssertionError: none)."""
    for target, source in mounts.items():
        if path == target or path.startswith(target + "/"):
            return source / path.removeprefix(target).lstrip("/")
    raise AssertionError(f"{path} is not mounted from the repository")


def test_prometheus_scrapes_every_gateway_instance_with_the_mounted_configuration() -> None:
    prometheus = compose()["services"]["prometheus"]
    mounts = _mounts("prometheus")
    flag = next(a for a in prometheus["command"] if a.startswith("--config.file="))
    config = yaml.safe_load(_in_container(mounts, flag.split("=", 1)[1]).read_text())
    (job,) = config["scrape_configs"]
    targets = {t for group in job["static_configs"] for t in group["targets"]}
    image_env = dict(re.findall(r"(GATEWAY_\w+)=(\S+)", (ROOT / "Dockerfile").read_text()))
    http_port = image_env["GATEWAY_HTTP_LISTEN"].rsplit(":", 1)[1]
    assert targets == {f"{g}:{http_port}" for g in GATEWAYS}
    # The alert rules another change adds: loaded from the mounted folder (relative to the config).
    assert config["rule_files"] == ["rules/*.yml"]


def test_grafana_provisions_the_dashboard_and_datasource_from_mounted_files() -> None:
    grafana = compose()["services"]["grafana"]
    mounts = _mounts("grafana")
    provisioning = _in_container(mounts, "/etc/grafana/provisioning")
    datasources = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())
    (datasource,) = datasources["datasources"]
    assert datasource["url"] == "http://prometheus:9090" and "prometheus" in compose()["services"]
    (provider,) = yaml.safe_load((provisioning / "dashboards" / "gateway.yml").read_text())["providers"]
    dashboards = _in_container(mounts, provider["options"]["path"])
    assert (dashboards / "gateway.json").is_file()
    home = grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert _in_container(mounts, home).is_file()
    # Every panel queries the provisioned datasource.
    dashboard = json.loads((dashboards / "gateway.json").read_text())
    uids = {t["datasource"]["uid"] for p in dashboard["panels"] for t in p.get("targets", [])}
    assert uids == {datasource["uid"]}


def test_a_mount_the_repository_does_not_have_is_refused() -> None:
    # The path checks above can fail: a container path no bind mount shows.
    with pytest.raises(AssertionError, match="not mounted"):
        _in_container(_mounts("grafana"), "/etc/grafana/elsewhere/gateway.json")


@pytest.fixture(scope="module")
def secrets(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """deploy/compose/init.sh run for real with the project's CLI, into a temporary folder
    (once for the module: it takes seconds)."""
    secrets = tmp_path_factory.mktemp("compose") / "secrets"
    bin_dir = Path(sys.executable).parent
    env = dict(os.environ, SECRETS=str(secrets), SECRETS_OWNER=f"{os.getuid()}:{os.getgid()}",
               PATH=f"{bin_dir}:/usr/sbin:/usr/bin:{os.environ.get('PATH', '')}")
    init = ["sh", str(DEPLOY / "init.sh")]
    done = subprocess.run(init, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    for secret in ("postgres_password", "broker_password", "credentials/admin.token"):
        assert (secrets / secret).read_text().strip() not in done.stdout + done.stderr  # never printed
    again = subprocess.run(init, env=env, capture_output=True, text=True, timeout=60)
    assert again.returncode == 0 and "already" in again.stdout  # made once, kept
    return secrets


def test_the_init_script_makes_every_secret_file_the_others_name(secrets: Path) -> None:
    texts = [COMPOSE.read_text(), *(p.read_text() for p in DEPLOY.iterdir() if p.name != "init.sh")]
    named = {m for text in texts for m in re.findall(r"/secrets/[\w./-]+", text)}
    assert named
    for path in named:
        assert (secrets / path.removeprefix("/secrets/")).is_file(), f"{path} is not made by init.sh"
    for private in ("pki/ca.key", "postgres_password", "broker_password", "credentials/admin.token"):
        assert (secrets / private).stat().st_mode & 0o077 == 0, f"{private} is readable by others"


@pytest.mark.parametrize("service", GATEWAYS)
def test_each_gateway_instance_has_a_valid_configuration_of_its_own(secrets: Path, service: str) -> None:
    declared = compose()["services"][service]["environment"]
    env = {k: v.replace("/secrets", str(secrets)) for k, v in declared.items()}
    # What deploy/compose/gateway.sh adds, and the image's own environment (Dockerfile ENV).
    image_env = dict(re.findall(r"(GATEWAY_\w+)=(\S+)", (ROOT / "Dockerfile").read_text()))
    env |= {"GATEWAY_STORE_URL": "postgresql://gateway:pw@postgres:5432/gateway",
            "GATEWAY_MQTT_URL": "mqtt://gateway:pw@broker:1883"}
    warnings: list[str] = []
    config = load_config(env={**image_env, **env}, warn=warnings.append)
    assert warnings == []
    assert not config.broker_is_managed and config.store_url.startswith("postgresql://")
    # One shared subscription, with a slot (client id) for each instance to lease.
    assert config.mqtt_shared_group and config.mqtt_slots >= len(GATEWAYS)
    # Telemetry: the compose file's JetStream server, once it is healthy (README "Telemetry sinks").
    assert config.telemetry_sink == "jetstream" and config.nats_url == "nats://nats:4222"
    assert compose()["services"][service]["depends_on"]["nats"] == {"condition": "service_healthy"}


def test_the_gateway_instances_agree_on_their_slots() -> None:
    # Slots are the same client ids for all (README "Several gateways on one broker").
    def slots(service: str) -> dict[str, str]:
        env: dict[str, str] = compose()["services"][service]["environment"]
        return {k: v for k, v in env.items() if k.startswith("GATEWAY_MQTT_")}

    assert all(slots(s) == slots(GATEWAYS[0]) for s in GATEWAYS)


@pytest.fixture
def compose_broker(secrets: Path, tmp_path: Path) -> Iterator[tuple[Path, int, int]]:
    """deploy/compose/mosquitto.conf on a real Mosquitto, its paths and ports moved to here."""
    deploy = tmp_path / "deploy"
    shutil.copytree(DEPLOY, deploy)
    plain, tls = free_port(), free_port()
    conf = (DEPLOY / "mosquitto.conf").read_text()
    conf = conf.replace("/secrets/", f"{secrets}/").replace("/deploy/", f"{deploy}/")
    conf = conf.replace("/home/gateway/", f"{tmp_path}/").replace("log_dest stdout", "log_dest stderr")
    conf = conf.replace("listener 1883 0.0.0.0", f"listener {plain} 127.0.0.1")
    conf = conf.replace("listener 8883 0.0.0.0", f"listener {tls} 127.0.0.1")
    # Started as root (a test machine), Mosquitto would switch to user `mosquitto`, who cannot
    # read the secrets; in the container it runs as the gateway's user from the start.
    conf += f"user {getpass.getuser()}\n"
    (deploy / "mosquitto.conf").write_text(conf)
    binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    proc = subprocess.Popen([binary, "-c", str(deploy / "mosquitto.conf")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        yield secrets, plain, tls
    finally:
        proc.terminate()
        proc.wait(10)
        if proc.stderr is not None:
            print(proc.stderr.read().decode(errors="replace"))  # shown when the test fails
            proc.stderr.close()


def _client(port: int, client_id: str, tls: ssl.SSLContext | None = None,
            username: str | None = None, password: str | None = None) -> aiomqtt.Client:
    return aiomqtt.Client("127.0.0.1", port, identifier=client_id, username=username, password=password,
                          tls_context=tls, protocol=aiomqtt.ProtocolVersion.V5, timeout=10)


async def _broker_up(port: int) -> None:
    for _ in range(200):  # Mosquitto is starting (a sentinel: the port answers)
        try:
            _, w = await asyncio.open_connection("127.0.0.1", port)
            w.close()
            return
        except OSError:
            await asyncio.sleep(0.05)
    raise AssertionError("the compose broker did not start")


async def test_the_compose_broker_forwards_a_certified_car_to_a_gateway_and_refuses_others(
    compose_broker: tuple[Path, int, int], tmp_path: Path
) -> None:
    secrets, plain, tls_port = compose_broker
    await _broker_up(plain)
    cert, key = pki.issue_car(secrets / "pki", VIN, tmp_path / "car")
    ca = str(secrets / "pki" / "ca.crt")
    car_tls = ssl.create_default_context(cafile=ca)
    car_tls.check_hostname = False  # reached as 127.0.0.1 here; the certificate names `broker`
    car_tls.load_cert_chain(str(cert), str(key))
    password = (secrets / "broker_password").read_text().strip()

    async with _client(plain, "gateway-1", username="gateway", password=password) as gateway:
        await gateway.subscribe("v1/vehicles/+/up", qos=1)
        async with _client(tls_port, VIN, car_tls) as car:
            await car.publish(topics.uplink(VIN), b"hello", qos=1)
        message = await asyncio.wait_for(anext(aiter(gateway.messages)), 10)
        assert (str(message.topic), bytes(message.payload)) == (topics.uplink(VIN), b"hello")

    with pytest.raises(aiomqtt.MqttError):  # a gateway login needs the password
        async with _client(plain, "gateway-2", username="gateway", password="wrong"):
            pass
    no_cert = ssl.create_default_context(cafile=ca)
    no_cert.check_hostname = False
    with pytest.raises(aiomqtt.MqttError):  # a car needs a certificate from the CA
        async with _client(tls_port, VIN, no_cert):
            pass
