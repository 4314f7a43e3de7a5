"""gRPC health (grpc.health.v1) and /readyz follow the broker session: the managed Mosquitto
killed with SIGKILL turns both to NOT_SERVING / 503, and back when the supervisor restarted it.

Real processes: the managed Mosquitto (killed by pid), the gateway's MQTT session, a gRPC
health client and HTTP over sockets. The one seam, as in test_broker_supervision.py: the
supervisor's delay before the restart is held until the down phase has been observed."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from support import eventually, free_port, gateway_config

from gateway.api.server import SERVICE_NAMES
from gateway.app import Gateway

pytestmark = pytest.mark.integration

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


async def readyz(gw: Gateway) -> tuple[int, dict[str, Any]]:
    async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{gw.http_port}/readyz") as resp:
        return resp.status, await resp.json()


async def statuses(health: health_pb2_grpc.HealthStub) -> set[int]:
    """Health/Check of the server overall and of each service (health needs no token)."""
    return {
        (await health.Check(health_pb2.HealthCheckRequest(service=name), timeout=10)).status
        for name in ("", *SERVICE_NAMES)
    }


async def test_killing_the_managed_broker_turns_grpc_health_and_readyz_down_and_back_up(
    tmp_path: Path,
) -> None:
    gw = Gateway(gateway_config(tmp_path, free_port()))
    await gw.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{gw.grpc_port}") as channel:
            health = health_pb2_grpc.HealthStub(channel)
            assert await statuses(health) == {SERVING}
            # A Health/Watch client is told of each change (pushed, not polled).
            watch = health.Watch(health_pb2.HealthCheckRequest(service=""))
            seen: list[int] = []

            async def follow() -> None:
                async for resp in watch:
                    seen.append(resp.status)

            follower = asyncio.create_task(follow())
            await eventually(lambda: asyncio.sleep(0, list(seen)), lambda s: s == [SERVING])

            assert gw.broker is not None and gw.broker_supervisor is not None
            release = asyncio.Event()

            async def held(_delay: float) -> None:
                await release.wait()

            gw.broker_supervisor.sleep = held
            killed = gw.broker.pid
            assert killed is not None
            os.kill(killed, signal.SIGKILL)
            await eventually(lambda: statuses(health), lambda s: s == {NOT_SERVING}, timeout=30)
            status, body = await readyz(gw)
            assert status == 503 and body["components"]["broker"] is False, body
            await eventually(lambda: asyncio.sleep(0, list(seen)), lambda s: s == [SERVING, NOT_SERVING])

            release.set()
            await eventually(lambda: statuses(health), lambda s: s == {SERVING}, timeout=60)
            assert (await readyz(gw))[0] == 200
            await eventually(
                lambda: asyncio.sleep(0, list(seen)), lambda s: s == [SERVING, NOT_SERVING, SERVING]
            )
            assert gw.broker.pid not in (None, killed)
            watch.cancel()
            await asyncio.gather(follower, return_exceptions=True)
    finally:
        await gw.stop()
