"""`telematics-gateway run` as a real process, observed only from outside (HTTP, gRPC, MQTT)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from google.protobuf import descriptor_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)
from support import SUITE_CREDENTIALS_ENV, SUITE_TOKEN, free_port

from gateway.api.client import bearer_metadata

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


class RunningGateway:
    def __init__(self, tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> None:
        self.grpc_port, self.http_port = free_port(), free_port()
        self.mqtt_port = free_port()
        environ = dict(
            os.environ,
            GATEWAY_DATA_DIR=str(tmp_path / "data"),
            GATEWAY_MQTT_PORT=str(self.mqtt_port),
            GATEWAY_MQTT_TLS_PORT=str(free_port()),
            GATEWAY_GRPC_LISTEN=f"127.0.0.1:{self.grpc_port}",
            GATEWAY_HTTP_LISTEN=f"127.0.0.1:{self.http_port}",
            PYTHONPATH=str(ROOT),
            **SUITE_CREDENTIALS_ENV,
            **(env or {}),
        )
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gateway", "run", *args],
            cwd=ROOT,
            env=environ,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )

    def http(self, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}{path}", timeout=2) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()

    def wait_ready(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                out = self.proc.stdout.read() if self.proc.stdout else ""
                raise AssertionError(f"gateway exited early:\n{out}")
            try:
                if self.http("/readyz")[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.05)  # paces the readiness poll of a real process
        raise AssertionError("gateway not ready in time")

    def stop(self, sig: int = signal.SIGTERM) -> tuple[int, str]:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        out, _ = self.proc.communicate(timeout=30)
        return self.proc.returncode, out


@pytest.fixture
def running(tmp_path: Path) -> Iterator[RunningGateway]:
    gw = RunningGateway(tmp_path)
    try:
        gw.wait_ready()
        yield gw
    finally:
        if gw.proc.poll() is None:
            gw.stop(signal.SIGTERM)


def test_run_serves_health_readiness_and_metrics_over_http(running: RunningGateway) -> None:
    assert running.http("/healthz")[0] == 200
    status, body = running.http("/readyz")
    assert status == 200 and '"mqtt": true' in body and '"store": true' in body
    status, metrics = running.http("/metrics")
    assert status == 200
    for name in ("gateway_messages_received_total", "gateway_messages_rejected_total",
                 "gateway_vehicles_online", "gateway_mqtt_reconnects_total",
                 "gateway_grpc_requests_total", "gateway_grpc_stream_subscribers"):
        assert name in metrics


def test_run_answers_grpc_health_and_lists_services_by_reflection(running: RunningGateway) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{running.grpc_port}") as ch:
        health = health_pb2_grpc.HealthStub(ch)
        for service in ("", "telematics.v1.VehicleService"):
            resp = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
            assert resp.status == health_pb2.HealthCheckResponse.SERVING
        services = set(ProtoReflectionDescriptorDatabase(ch).get_services())
    assert {"telematics.v1.VehicleService", "telematics.v1.TelemetryService",
            "grpc.health.v1.Health"} <= services


def test_sigterm_stops_the_gateway_and_its_broker_with_exit_code_0(running: RunningGateway) -> None:
    code, out = running.stop(signal.SIGTERM)
    assert code == 0, out
    assert "gateway stopped" in out
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", running.mqtt_port), timeout=1).close()


def test_unreachable_broker_at_start_exits_non_zero_naming_the_url(tmp_path: Path) -> None:
    port = free_port()
    gw = RunningGateway(tmp_path, "--mqtt-url", f"mqtt://127.0.0.1:{port}")
    out, _ = gw.proc.communicate(timeout=30)
    assert gw.proc.returncode != 0
    assert f"mqtt://127.0.0.1:{port}" in out


def test_corrupted_data_file_makes_run_exit_naming_the_file_and_field(tmp_path: Path) -> None:
    data = tmp_path / "reference"
    shutil.copytree(ROOT / "sim_profiles", data / "sim_profiles")
    shutil.copytree(ROOT / "roaming", data / "roaming")
    taycan = data / "sim_profiles" / "taycan.toml"
    taycan.write_text(taycan.read_text().replace("model_year_from = ", "model_year_from = \"soon\" #", 1))
    gw = RunningGateway(tmp_path, env={"GATEWAY_REFERENCE_DIR": str(data)})
    out, _ = gw.proc.communicate(timeout=30)
    assert gw.proc.returncode != 0
    assert "taycan.toml" in out and "model_year_from" in out, out


def test_managed_broker_does_not_outlive_a_gateway_killed_with_sigkill(running: RunningGateway) -> None:
    running.stop(signal.SIGKILL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", running.mqtt_port), timeout=0.2).close()
        except OSError:
            return
        time.sleep(0.05)  # paces the poll until the port closes
    raise AssertionError("the managed broker still listens after its gateway was killed")


def test_sigterm_with_open_streams_ends_them_with_going_away_and_exits_promptly(tmp_path: Path) -> None:
    from gateway._gen.telematics.v1 import (
        telemetry_pb2,
        telemetry_pb2_grpc,
        vehicles_pb2,
        vehicles_pb2_grpc,
    )

    # A long grace: open streams must not hold the shutdown until it runs out. The bound below
    # (half the grace) is far above a shutdown on a loaded machine and far below the grace.
    grace_s = 120.0
    running = RunningGateway(tmp_path, env={"GATEWAY_SHUTDOWN_GRACE_S": str(grace_s)})
    try:
        running.wait_ready()
        with grpc.insecure_channel(f"127.0.0.1:{running.grpc_port}") as ch:
            auth = bearer_metadata(SUITE_TOKEN)
            watch = vehicles_pb2_grpc.VehicleServiceStub(ch).WatchVehicleEvents(
                vehicles_pb2.WatchVehicleEventsRequest(), metadata=auth
            )
            telemetry = telemetry_pb2_grpc.TelemetryServiceStub(ch).SubscribeTelemetry(
                telemetry_pb2.SubscribeTelemetryRequest(), metadata=auth
            )
            # Both streams have reached the gateway before the signal (a stream that had not
            # would meet a closed server instead: a different status, the flake seen under load).
            deadline = time.monotonic() + 30
            for stream in ("WatchVehicleEvents", "SubscribeTelemetry"):
                opened = f'gateway_grpc_stream_subscribers{{stream="{stream}"}} 1.0'
                while opened not in running.http("/metrics")[1]:
                    assert time.monotonic() < deadline, f"{stream} did not open"
                    time.sleep(0.05)  # paces the poll of the metrics page
            started = time.monotonic()
            code, out = running.stop(signal.SIGTERM)
            elapsed = time.monotonic() - started
            for call in (watch, telemetry):
                with pytest.raises(grpc.RpcError) as ended:
                    list(call)
                # Not OK ("finished"): the server goes away, the client resumes elsewhere.
                assert ended.value.code() is grpc.StatusCode.UNAVAILABLE, ended.value
                assert "going away" in (ended.value.details() or "")
    finally:
        if running.proc.poll() is None:
            running.stop(signal.SIGTERM)
    assert code == 0, out
    assert elapsed < grace_s / 2, f"shutdown took {elapsed:.1f} s with open streams (grace is {grace_s} s)"


def test_first_run_creates_the_pki_and_says_where_it_is_and_which_listeners_are_open(
    tmp_path: Path,
) -> None:
    gw = RunningGateway(tmp_path)
    try:
        gw.wait_ready()
    finally:
        code, out = gw.stop(signal.SIGTERM)
    assert code == 0, out
    pki = tmp_path / "data" / "pki"
    for name in ("ca.crt", "ca.key", "broker.crt", "broker.key", "gateway.crt", "gateway.key"):
        assert (pki / name).is_file(), name
    assert f"created in {pki}: ca.crt, broker.crt, gateway.crt" in out
    assert "telematics-gateway pki issue-car <VIN>" in out
    assert "TLS listener mqtts://127.0.0.1:" in out and "client certificate required" in out
    assert f"plain listener mqtt://127.0.0.1:{gw.mqtt_port} is UNAUTHENTICATED" in out
    assert "BEGIN" not in out  # no key or certificate is ever printed
    second = RunningGateway(tmp_path)
    try:
        second.wait_ready()
    finally:
        code, out = second.stop(signal.SIGTERM)
    assert code == 0, out
    assert "created in" not in out  # created once, then kept


def test_run_creates_the_admin_token_once_and_says_where_it_is_never_what(tmp_path: Path) -> None:
    first = RunningGateway(tmp_path)
    first.wait_ready()
    token_path = tmp_path / "data" / "credentials" / "admin.token"
    token = token_path.read_text().strip()
    assert token_path.stat().st_mode & 0o777 == 0o600
    code, out = first.stop(signal.SIGTERM)
    assert code == 0, out
    assert f"admin token created in {token_path}" in out
    assert token.split(".")[1] not in out
    second = RunningGateway(tmp_path)  # a restart keeps the credential
    second.wait_ready()
    code, out = second.stop(signal.SIGTERM)
    assert f"admin token kept in {token_path}" in out and token_path.read_text().strip() == token


def test_run_refuses_plaintext_grpc_beyond_loopback_with_exit_code_2(tmp_path: Path) -> None:
    gw = RunningGateway(tmp_path, "--grpc-listen", "0.0.0.0:50051")
    out, _ = gw.proc.communicate(timeout=30)
    assert gw.proc.returncode == 2 and "gRPC beyond loopback needs TLS" in out, out


BUF = ROOT / ".tools" / "node_modules" / ".bin" / "buf"


def test_reflection_answers_as_v1_to_buf_curl_and_to_a_raw_v1_stream(running: RunningGateway) -> None:
    # v1 is what current tools ask for first; the v1alpha test above shows v1alpha still works.
    target = f"127.0.0.1:{running.grpc_port}"
    with grpc.insecure_channel(target) as ch:
        info = ch.stream_stream(
            "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
            request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
            response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
        )
        answers = list(info(iter([
            reflection_pb2.ServerReflectionRequest(list_services=""),
            reflection_pb2.ServerReflectionRequest(file_containing_symbol="telematics.v1.VehicleService"),
        ]), timeout=10))
    listed = {s.name for s in answers[0].list_services_response.service}
    assert {"telematics.v1.VehicleService", "telematics.v1.EntitlementService", "grpc.health.v1.Health",
            "grpc.reflection.v1.ServerReflection", "grpc.reflection.v1alpha.ServerReflection"} <= listed
    files = [descriptor_pb2.FileDescriptorProto.FromString(raw)
             for raw in answers[1].file_descriptor_response.file_descriptor_proto]
    assert "telematics/v1/vehicles.proto" in {f.name for f in files}

    if not BUF.exists():
        if shutil.which("npm") is None:
            pytest.skip("npm is not installed, so buf is not (scripts/bootstrap.sh installs it with npm)")
        pytest.fail("buf is missing from .tools/: run `make setup`")
    done = subprocess.run(
        [str(BUF), "curl", "--protocol", "grpc", "--http2-prior-knowledge", "--reflect-protocol", "grpc-v1",
         "--list-methods", f"http://{target}"],
        capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    methods = set(done.stdout.split())
    assert {"telematics.v1.VehicleService/GetVehicle", "telematics.v1.EntitlementService/Grant",
            "grpc.health.v1.Health/Check",
            "grpc.reflection.v1.ServerReflection/ServerReflectionInfo"} <= methods
