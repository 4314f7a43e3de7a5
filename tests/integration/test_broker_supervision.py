"""The managed broker killed with SIGKILL: the gateway starts it again, /readyz goes down and
back up, what the gateway had received stays, and cars reconnect and are heard again.

All real processes: the gateway's managed Mosquitto (killed by pid), its MQTT session, a car on
paho. The one seam: the supervisor's delay before the restart is held until the test has seen
/readyz go down (gateway/broker/supervisor.py takes its sleep by injection), so the down phase
is observed for certain instead of raced."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import pytest
from support import eventually, free_port, gateway_channel, gateway_config, scraped
from vehicle_client import TestVehicle

from gateway._gen.telematics.v1 import common_pb2, vehicles_pb2, vehicles_pb2_grpc
from gateway.app import Gateway

pytestmark = pytest.mark.integration

VIN = "WP0ZZZ99ZJS700001"


async def readyz(gw: Gateway) -> tuple[int, dict[str, Any]]:
    async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{gw.http_port}/readyz") as resp:
        return resp.status, await resp.json()


async def charging_sessions(channel: grpc.aio.Channel, until: str) -> list[str]:
    """The car's recorded charging session ids from the start of the event log, up to ``until``."""
    stub = vehicles_pb2_grpc.VehicleServiceStub(channel)
    stream = stub.WatchVehicleEvents(vehicles_pb2.WatchVehicleEventsRequest(vin=VIN))
    seen: list[str] = []
    try:
        async with asyncio.timeout(30):
            async for event in stream:
                if event.WhichOneof("kind") == "charging_session":
                    seen.append(event.charging_session.session.session_id)
                    if seen[-1] == until:
                        return seen
    finally:
        stream.cancel()
    raise AssertionError(f"the stream ended before {until}: {seen}")


async def test_a_sigkilled_managed_broker_is_restarted_and_nothing_received_is_lost(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "gateway.broker.supervisor")
    gw = Gateway(gateway_config(tmp_path, free_port()))
    await gw.start()
    car = TestVehicle(VIN, gw.config.mqtt_port, bearer=common_pb2.BEARER_EMBEDDED_SIM)
    try:
        async with gateway_channel(gw) as channel:
            await car.connect()
            before = [f"before-{i}" for i in range(1, 6)]
            for session_id in before:
                await car.charging_session(session_id)  # QoS 1: acknowledged by the broker
            assert await charging_sessions(channel, until=before[-1]) == before  # received

            assert gw.broker is not None and gw.broker_supervisor is not None
            release = asyncio.Event()
            delays: list[float] = []

            async def held(delay: float) -> None:
                delays.append(delay)
                await release.wait()

            gw.broker_supervisor.sleep = held
            killed = gw.broker.pid
            assert killed is not None
            os.kill(killed, signal.SIGKILL)
            _, body = await eventually(lambda: readyz(gw), lambda r: r[0] == 503, timeout=30)
            assert body["components"]["broker"] is False and body["components"]["mqtt"] is False, body
            assert "broker unavailable" in body["reason"]
            release.set()
            await eventually(lambda: readyz(gw), lambda r: r[0] == 200, timeout=60)
            assert delays == [0.2]  # the supervisor's first, short delay
            assert gw.broker.pid not in (None, killed)
            assert await scraped(gw, "gateway_broker_restarts_total") == 1
            assert await scraped(gw, "gateway_mqtt_reconnects_total") >= 1
            died = [r for r in caplog.records if "died" in r.getMessage()]
            assert [r.levelno for r in died] == [logging.WARNING]
            assert f"pid {killed}" in died[0].getMessage() and "killed by SIGKILL" in died[0].getMessage()
            # The real broker grants the expiry asked for (no CONNACK property: as asked).
            assert await scraped(gw, "gateway_mqtt_session_expiry_seconds") == 7 * 24 * 3600

            await car.close()  # its connection died with the broker
            await car.connect(boot=False)
            after = [f"after-{i}" for i in range(1, 4)]
            for session_id in after:
                await car.charging_session(session_id)
            assert await charging_sessions(channel, until=after[-1]) == before + after
    finally:
        await car.close()
        await gw.stop()
