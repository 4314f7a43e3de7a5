"""The whole gateway on PostgreSQL (store_url), wired as `run` wires it: a car comes online, the
backend watches its events, and after a restart the vehicle and the event log are still there."""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
import pytest
from support import eventually, free_port, gateway_channel
from test_walking_skeleton import get_vehicle, take
from vehicle_client import TestVehicle

from gateway._gen.telematics.v1 import (
    common_pb2,
    entitlements_pb2,
    entitlements_pb2_grpc,
    vehicles_pb2,
    vehicles_pb2_grpc,
)
from gateway.app import Gateway
from gateway.config import Config, load_config

pytestmark = pytest.mark.integration

VIN = "WP0ZZZ99ZJS100011"


def pg_config(tmp_path: Path, store_url: str) -> Config:
    return load_config(
        None, env={}, data_dir=str(tmp_path / "data"), store_url=store_url, mqtt_port=free_port(),
        mqtt_tls_port=free_port(), grpc_listen="127.0.0.1:0", http_listen="127.0.0.1:0",
    )


async def test_a_gateway_on_postgresql_keeps_vehicles_and_events_across_a_restart(
    tmp_path: Path, pg_url: str
) -> None:
    config = pg_config(tmp_path, pg_url)
    gw = Gateway(config)
    await gw.start()
    try:
        async with gateway_channel(gw) as channel:
            stub = vehicles_pb2_grpc.VehicleServiceStub(channel)
            stream = stub.WatchVehicleEvents(vehicles_pb2.WatchVehicleEventsRequest(vin=VIN))
            car = TestVehicle(VIN, config.mqtt_port, bearer=common_pb2.BEARER_EMBEDDED_SIM)
            await car.connect()
            [online] = await asyncio.wait_for(take(stream, 1), 10)
            stream.cancel()
            assert online.WhichOneof("kind") == "online"
            car.cut()  # embedded SIM: offline at once (no R20 grace)
            await eventually(lambda: get_vehicle(stub, VIN),
                             lambda v: v is not None and v.presence == vehicles_pb2.PRESENCE_OFFLINE)
    finally:
        await gw.stop()

    gw = Gateway(config)  # the same database: nothing is in data_dir but the broker's files
    await gw.start()
    try:
        async with gateway_channel(gw) as channel:
            stub = vehicles_pb2_grpc.VehicleServiceStub(channel)
            vehicle = await get_vehicle(stub, VIN)
            assert vehicle is not None and vehicle.presence == vehicles_pb2.PRESENCE_OFFLINE
            replay = stub.WatchVehicleEvents(vehicles_pb2.WatchVehicleEventsRequest(vin=VIN, after_cursor=0))
            events = await asyncio.wait_for(take(replay, 2), 10)
            replay.cancel()
            assert [e.WhichOneof("kind") for e in events] == ["online", "offline"]
            assert events[0].cursor == online.cursor
    finally:
        await gw.stop()
    assert not list((tmp_path / "data").glob("*.db"))


async def test_grpc_reads_answer_unavailable_when_postgresql_is_gone(tmp_path: Path, pg_url: str) -> None:
    gw = Gateway(pg_config(tmp_path, pg_url))
    await gw.start()
    try:
        await gw.ledger.close()  # the database went away
        async with gateway_channel(gw) as channel:
            stub = entitlements_pb2_grpc.EntitlementServiceStub(channel)
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.ListEntitlements(entitlements_pb2.ListEntitlementsRequest(vin=VIN))
            assert caught.value.code() is grpc.StatusCode.UNAVAILABLE
    finally:
        await gw.stop()
