"""At shutdown open streams end with UNAVAILABLE "going away", not OK: a client can tell "the
server goes away, resume from your cursor elsewhere" from "the stream is finished"."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
import pytest
from support import eventually, scraped, telemetry_subscribed

from gateway._gen.telematics.v1 import (
    entitlements_pb2,
    entitlements_pb2_grpc,
    telemetry_pb2,
    telemetry_pb2_grpc,
    vehicles_pb2,
    vehicles_pb2_grpc,
)
from gateway.app import Gateway

pytestmark = pytest.mark.integration


async def final_status(call: AsyncIterator[object]) -> tuple[grpc.StatusCode, str]:
    """Read a stream to its end; its status code and details."""
    try:
        async for _ in call:
            pass
    except grpc.aio.AioRpcError as exc:
        return exc.code(), exc.details() or ""
    return grpc.StatusCode.OK, ""


async def open_streams_of(gw: Gateway, method: str) -> float:
    return await scraped(gw, f'gateway_grpc_stream_subscribers{{stream="{method}"}}')


def open_streams(channel: grpc.aio.Channel) -> list[asyncio.Task[tuple[grpc.StatusCode, str]]]:
    calls: list[AsyncIterator[object]] = [
        vehicles_pb2_grpc.VehicleServiceStub(channel).WatchVehicleEvents(vehicles_pb2.WatchVehicleEventsRequest()),
        entitlements_pb2_grpc.EntitlementServiceStub(channel).WatchEntitlementEvents(
            entitlements_pb2.WatchEntitlementEventsRequest()
        ),
        telemetry_pb2_grpc.TelemetryServiceStub(channel).SubscribeTelemetry(
            telemetry_pb2.SubscribeTelemetryRequest()
        ),
    ]
    return [asyncio.create_task(final_status(call)) for call in calls]


async def test_open_streams_end_with_unavailable_going_away_when_the_gateway_stops(
    gateway: Gateway, channel: grpc.aio.Channel
) -> None:
    streams = open_streams(channel)
    await telemetry_subscribed(gateway, [])
    await eventually(
        lambda: asyncio.gather(*(open_streams_of(gateway, name)
                                 for name in ("WatchVehicleEvents", "WatchEntitlementEvents"))),
        lambda counts: counts == [1, 1],
    )
    await gateway.stop()
    for status in await asyncio.wait_for(asyncio.gather(*streams), 60):
        assert status[0] is grpc.StatusCode.UNAVAILABLE, status
        assert "going away" in status[1], status


async def test_a_stream_opened_while_the_gateway_stops_is_told_it_goes_away(
    gateway: Gateway, channel: grpc.aio.Channel
) -> None:
    # The hubs and the fan-out are closed for shutdown while the gRPC server still answers.
    gateway.hub.close(going_away=True)
    gateway.entitlement_hub.close(going_away=True)
    gateway.fanout.close(going_away=True)
    for status in await asyncio.wait_for(asyncio.gather(*open_streams(channel)), 60):
        assert status == (grpc.StatusCode.UNAVAILABLE, status[1]) and "going away" in status[1], status
