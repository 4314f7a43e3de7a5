"""The simulator over TLS (``python -m load.sim --tls``): each simulated car gets its own
certificate from the gateway's development CA and comes online through the managed broker's
TLS listener (README "Identity", "Try it from outside"). Real Mosquitto, real gateway, real gRPC."""

from __future__ import annotations

import asyncio
import json
import os
import random
import ssl
import sys
from pathlib import Path

import grpc
import pytest
from support import eventually

from gateway._gen.telematics.v1 import vehicles_pb2, vehicles_pb2_grpc
from gateway.app import Gateway
from gateway.security import pki
from load.fleet import generate_fleet
from load.sim import SimCar, SimClock, Stats
from load.sim_tls import CarCertificates

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


async def listed(stub: vehicles_pb2_grpc.VehicleServiceStub) -> dict[str, int]:
    """VIN -> presence of every vehicle the gateway lists."""
    page: vehicles_pb2.ListVehiclesResponse = await stub.ListVehicles(
        vehicles_pb2.ListVehiclesRequest(page_size=100))
    return {v.vin: v.presence for v in page.vehicles}


@pytest.mark.timeout(30)
async def test_tls_sim_cars_come_online_through_the_tls_listener_each_with_its_own_certificate(
    gateway: Gateway, channel: grpc.aio.Channel, tmp_path: Path
) -> None:
    certs = CarCertificates(gateway.config.pki_dir, tmp_path / "certs")
    fleet = generate_fleet(3, seed=9)
    stats = Stats()
    sims = [SimCar(car, gateway.config.mqtt_tls_port, SimClock(3600, 1), stats, random.Random(i), tls=certs)
            for i, car in enumerate(fleet)]
    assert certs.issued == 3
    for sim in sims:
        await sim.connect(boot=True, parked=True)
    try:
        for sim in sims:  # a TLS connection, with the car's own certificate (CN = VIN)
            assert sim.client is not None
            sock = sim.client._client.socket()
            assert isinstance(sock, ssl.SSLSocket)
            assert pki.certificate_identity(certs.paths(sim.car.vin)[0]) == sim.car.vin
        stub = vehicles_pb2_grpc.VehicleServiceStub(channel)
        vins = {car.vin for car in fleet}
        seen = await eventually(lambda: listed(stub), lambda v: vins <= set(v))
        assert all(seen[vin] == vehicles_pb2.PRESENCE_ONLINE for vin in vins)
    finally:
        for sim in sims:
            await sim.sleep_mode()
    assert not stats.errors
    assert CarCertificates(gateway.config.pki_dir, tmp_path / "certs").issued == 0  # cached


@pytest.mark.timeout(30)
async def test_sim_command_line_with_tls_runs_a_day_of_cars_against_a_running_gateway(
    gateway: Gateway, channel: grpc.aio.Channel, tmp_path: Path
) -> None:
    """The quick start's line: `python -m load.sim --port <TLS port> --tls --pki-dir data/pki`."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "load.sim", "--port", str(gateway.config.mqtt_tls_port), "--tls",
        "--pki-dir", str(gateway.config.pki_dir), "--cert-dir", str(tmp_path / "certs"),
        "--cars", "3", "--hours", "0.25", "--speed", "900",
        cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 25)
    assert proc.returncode == 0, err.decode()[-2000:]
    report = json.loads(out)
    assert report["errors"] == []
    assert report["sent"]["hello"] >= 3
    stub = vehicles_pb2_grpc.VehicleServiceStub(channel)
    # The sim's publishes were acknowledged by the broker; the gateway may still be applying them.
    await eventually(lambda: listed(stub), lambda v: len(v) == 3)
    assert len(list((tmp_path / "certs").glob("*/WP*.crt"))) == 3


@pytest.mark.timeout(30)
async def test_sim_with_tls_and_no_ca_says_where_the_ca_should_be(tmp_path: Path) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "load.sim", "--port", "18883", "--tls", "--pki-dir", str(tmp_path / "none"),
        "--cert-dir", str(tmp_path / "certs"),
        cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    _, err = await asyncio.wait_for(proc.communicate(), 25)
    assert proc.returncode == 2
    assert "ca.crt" in err.decode() and "make run" in err.decode()
