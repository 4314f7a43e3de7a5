"""gateway_grpc_server_handling_seconds over the real gRPC server of an in-process gateway:
each unary call is timed once under its method and status code (an answer, an error, a call
refused at the edge); a server stream is not timed (its duration is a subscription's)."""

from __future__ import annotations

import asyncio

import aiohttp
import grpc
import pytest
from support import eventually, scraped, telemetry_subscribed

from gateway._gen.telematics.v1 import telemetry_pb2, telemetry_pb2_grpc, vehicles_pb2, vehicles_pb2_grpc
from gateway.app import Gateway

pytestmark = pytest.mark.integration

HISTOGRAM = "gateway_grpc_server_handling_seconds"
UNKNOWN_VIN = "WP0ZZZ99ZJS700001"


def timed(method: str, code: str, part: str = "count") -> str:
    return f'{HISTOGRAM}_{part}{{code="{code}",method="{method}"}}'  # labels sorted, as exported


async def test_each_unary_call_is_timed_under_its_method_and_code(
    gateway: Gateway, channel: grpc.aio.Channel
) -> None:
    assert await scraped(gateway, timed("ListVehicles", "OK")) == 0  # exists before the first call
    vehicles = vehicles_pb2_grpc.VehicleServiceStub(channel)
    await vehicles.ListVehicles(vehicles_pb2.ListVehiclesRequest())
    with pytest.raises(grpc.aio.AioRpcError) as missing:
        await vehicles.GetVehicle(vehicles_pb2.GetVehicleRequest(vin=UNKNOWN_VIN))
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND
    async with grpc.aio.insecure_channel(f"127.0.0.1:{gateway.grpc_port}") as anonymous:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await vehicles_pb2_grpc.VehicleServiceStub(anonymous).GetVehicle(
                vehicles_pb2.GetVehicleRequest(vin=UNKNOWN_VIN)
            )
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED

    assert await scraped(gateway, timed("ListVehicles", "OK")) == 1
    assert await scraped(gateway, timed("ListVehicles", "OK", "sum")) > 0
    assert await scraped(gateway, timed("GetVehicle", "NOT_FOUND")) == 1
    # Refused at the edge: timed too.
    assert await scraped(gateway, timed("GetVehicle", "UNAUTHENTICATED")) == 1
    assert await scraped(gateway, timed("GetVehicle", "OK")) == 0


async def test_a_server_stream_is_counted_but_not_timed(gateway: Gateway, channel: grpc.aio.Channel) -> None:
    before = list(gateway.fanout.subscribers)
    stream = telemetry_pb2_grpc.TelemetryServiceStub(channel).SubscribeTelemetry(
        telemetry_pb2.SubscribeTelemetryRequest()
    )
    reading = asyncio.ensure_future(stream.read())
    await telemetry_subscribed(gateway, before)
    stream.cancel()
    with pytest.raises(asyncio.CancelledError):
        await reading
    # The stream's end is counted (a sentinel: its handler has finished) ...
    counted = 'gateway_grpc_requests_total{code="CANCELLED",method="SubscribeTelemetry"}'
    await eventually(lambda: scraped(gateway, counted), lambda n: n == 1)
    # ... and no latency series has its name.
    url = f"http://127.0.0.1:{gateway.http_port}/metrics"
    async with aiohttp.ClientSession() as http, http.get(url) as resp:
        text = await resp.text()
    timed_methods = {line.split('method="', 1)[1].split('"', 1)[0] for line in text.splitlines()
                     if line.startswith(HISTOGRAM)}
    assert "GetVehicle" in timed_methods and "SubscribeTelemetry" not in timed_methods
