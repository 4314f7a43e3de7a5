"""R20: a car on 2G whose data pauses for a phone call is not flapped offline."""

from __future__ import annotations

import pytest
from support import eventually, gateway_channel
from vehicle_client import TestVehicle

from gateway._gen.telematics.v1 import common_pb2, vehicles_pb2, vehicles_pb2_grpc
from gateway.app import Gateway
from gateway.clock import ManualClock

pytestmark = pytest.mark.integration

VIN = "WP0ZZZ99ZJS400001"


async def events_of(gw: Gateway) -> list[str]:
    rows = await gw.store.read_events(0, 100, VIN)
    return [vehicles_pb2.VehicleEvent.FromString(r.payload).WhichOneof("kind") or "" for r in rows]


async def presence(gw: Gateway) -> int:
    async with gateway_channel(gw) as ch:
        stub = vehicles_pb2_grpc.VehicleServiceStub(ch)
        v = await stub.GetVehicle(vehicles_pb2.GetVehicleRequest(vin=VIN))
        return int(v.presence)


async def grace_started(gw: Gateway) -> float:
    return gw.metrics.registry.get_sample_value("gateway_presence_grace_total", {"outcome": "started"}) or 0.0


def car_on_2g(gw: Gateway) -> TestVehicle:
    return TestVehicle(VIN, gw.config.mqtt_port, bearer=common_pb2.BEARER_INSERTED_SIM,
                       radio=common_pb2.RADIO_2G)


async def test_2g_car_that_reconnects_within_the_grace_period_never_goes_offline(
    clocked_gateway: tuple[Gateway, ManualClock],
) -> None:
    gw, clock = clocked_gateway
    car = car_on_2g(gw)
    await car.connect()
    await eventually(lambda: events_of(gw), lambda k: k == ["online"])
    car.cut()  # a phone call: 2G data pauses, the broker publishes the will
    await eventually(lambda: grace_started(gw), lambda n: n == 1)
    clock.advance(60)  # within the 120 s of roaming/presence.toml for inserted SIM on 2G
    await car.connect(boot=False)
    await eventually(lambda: events_of(gw), lambda k: k == ["online", "online"])
    clock.advance(200)
    await car.state(lock=common_pb2.LOCK_STATE_LOCKED)
    await eventually(lambda: events_of(gw), lambda k: len(k) == 3)
    assert "offline" not in await events_of(gw)
    assert await presence(gw) == vehicles_pb2.PRESENCE_ONLINE
    await car.close()


async def test_2g_car_silent_beyond_the_grace_period_goes_offline(
    clocked_gateway: tuple[Gateway, ManualClock],
) -> None:
    gw, clock = clocked_gateway
    car = car_on_2g(gw)
    await car.connect()
    await eventually(lambda: events_of(gw), lambda k: k == ["online"])
    car.cut()
    await eventually(lambda: grace_started(gw), lambda n: n == 1)
    assert await presence(gw) == vehicles_pb2.PRESENCE_ONLINE
    clock.advance(121)
    await eventually(lambda: events_of(gw), lambda k: k == ["online", "offline"])
    assert await presence(gw) == vehicles_pb2.PRESENCE_OFFLINE
