"""End to end: vehicles over a real Mosquitto (and, where marked, over ejabberd's mod_mqtt as the
gateway's external broker), backends over real gRPC, SREs over HTTP."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
import grpc
import pytest
from ejabberd_support import BROKERS
from support import eventually
from vehicle_client import CarLink, TestVehicle

from gateway import topics
from gateway._gen.telematics.v1 import common_pb2, vehicles_pb2, vehicles_pb2_grpc
from gateway.app import Gateway

pytestmark = pytest.mark.integration

VIN = "WP0ZZZ99ZJS100001"
VIN2 = "WP0ZZZ99ZJS100002"


def mqtt_port(gw: Gateway) -> int:
    return gw.config.mqtt_port


async def get_vehicle(stub: vehicles_pb2_grpc.VehicleServiceStub, vin: str) -> vehicles_pb2.Vehicle | None:
    try:
        # grpc ships no type stubs: the call is Any, the generated .pyi says what it returns.
        vehicle: vehicles_pb2.Vehicle = await stub.GetVehicle(vehicles_pb2.GetVehicleRequest(vin=vin))
        return vehicle
    except grpc.aio.AioRpcError as exc:
        if exc.code() is grpc.StatusCode.NOT_FOUND:
            return None
        raise


async def metric(gw: Gateway, name: str) -> float:
    async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{gw.http_port}/metrics") as resp:
        text = await resp.text()
    for line in text.splitlines():
        if line.startswith(name + " ") or (line.startswith(name + "{") and line.split(" ")[0] == name):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


async def take(stream: AsyncIterator[vehicles_pb2.VehicleEvent], n: int) -> list[vehicles_pb2.VehicleEvent]:
    out = []
    async for event in stream:
        out.append(event)
        if len(out) == n:
            break
    return out


@pytest.mark.parametrize("broker_kind", BROKERS)
async def test_birth_message_makes_the_vehicle_online_with_bearer_and_countries(
    gateway: Gateway, channel: grpc.aio.Channel, car_link: CarLink
) -> None:
    stub = vehicles_pb2_grpc.VehicleServiceStub(channel)
    car = car_link.vehicle(VIN, bearer=common_pb2.BEARER_WIFI_HOTSPOT,
                           home_country="DE", visited_country="AT", roaming=True)
    await car.connect()
    v = await eventually(lambda: get_vehicle(stub, VIN), lambda v: v is not None)
    assert v is not None
    assert v.presence == vehicles_pb2.PRESENCE_ONLINE
    assert v.bearer == common_pb2.BEARER_WIFI_HOTSPOT
    assert (v.home_country, v.visited_country, v.roaming) == ("DE", "AT", True)
    assert (v.model, v.model_year) == ("911", 2018)
    await car.close()


@pytest.mark.parametrize("broker_kind", BROKERS)
async def test_cut_connection_is_reported_offline_on_the_event_stream(
    gateway: Gateway, channel: grpc.aio.Channel, car_link: CarLink
) -> None:
    stub = vehicles_pb2_grpc.VehicleServiceStub(channel)
    stream = stub.WatchVehicleEvents(vehicles_pb2.WatchVehicleEventsRequest(vin=VIN))
    # Embedded SIM: no presence grace (R20 gaps concern inserted SIMs and hotspots). The
    # offline event comes from the car's MQTT will, which the broker publishes.
    car = car_link.vehicle(VIN, bearer=common_pb2.BEARER_EMBEDDED_SIM)
    await car.connect()
    online, = await asyncio.wait_for(take(stream, 1), 10)
    assert online.WhichOneof("kind") == "online" and online.online.boot
    car.cut()
    offline, = await asyncio.wait_for(take(stream, 1), 10)
    assert offline.WhichOneof("kind") == "offline"
    assert offline.offline.reason == vehicles_pb2.OFFLINE_REASON_CONNECTION_LOST
    assert offline.vehicle.presence == vehicles_pb2.PRESENCE_OFFLINE
    assert offline.cursor > online.cursor
    stream.cancel()


@pytest.mark.parametrize("broker_kind", BROKERS)
async def test_clean_goodbye_is_offline_with_reason_goodbye(
    gateway: Gateway, channel: grpc.aio.Channel, car_link: CarLink
) -> None:
    stub = vehicles_pb2_grpc.VehicleServiceStub(channel)
    car = car_link.vehicle(VIN)
    await car.connect()
    await car.goodbye()
    v = await eventually(lambda: get_vehicle(stub, VIN),
                         lambda v: v is not None and v.presence == vehicles_pb2.PRESENCE_OFFLINE)
    assert v is not None and v.offline_reason == vehicles_pb2.OFFLINE_REASON_GOODBYE


async def test_watch_resumed_from_a_cursor_gets_every_missed_event_once(
    gateway: Gateway, channel: grpc.aio.Channel
) -> None:
    stub = vehicles_pb2_grpc.VehicleServiceStub(channel)
    first = stub.WatchVehicleEvents(vehicles_pb2.WatchVehicleEventsRequest())
    car = TestVehicle(VIN, mqtt_port(gateway), bearer=common_pb2.BEARER_EMBEDDED_SIM)
    await car.connect()
    seen = await asyncio.wait_for(take(first, 1), 10)
    first.cancel()  # the backend disconnects ...
    # ... and misses these:
    await car.state(lock=common_pb2.LOCK_STATE_LOCKED)
    await car.state(power=common_pb2.POWER_STATE_OFF)
    car.cut()
    await eventually(lambda: get_vehicle(stub, VIN),
                     lambda v: v is not None and v.presence == vehicles_pb2.PRESENCE_OFFLINE)
    request = vehicles_pb2.WatchVehicleEventsRequest(after_cursor=seen[-1].cursor)
    resumed = stub.WatchVehicleEvents(request)
    missed = await asyncio.wait_for(take(resumed, 3), 10)
    resumed.cancel()
    assert [e.WhichOneof("kind") for e in missed] == ["state_changed", "state_changed", "offline"]
    assert [list(e.state_changed.changed) for e in missed[:2]] == [["state.lock"], ["state.power"]]
    cursors = [seen[-1].cursor] + [e.cursor for e in missed]
    assert cursors == sorted(set(cursors)), "events repeated or out of order"


async def test_spoofed_truncated_and_oversize_messages_are_rejected_and_counted(
    gateway: Gateway, channel: grpc.aio.Channel
) -> None:
    stub = vehicles_pb2_grpc.VehicleServiceStub(channel)
    car = TestVehicle(VIN, mqtt_port(gateway))
    await car.connect()
    await eventually(lambda: get_vehicle(stub, VIN), lambda v: v is not None)

    spoofed = car.envelope()
    spoofed.vin = VIN2  # the envelope claims another car on this car's own topic
    spoofed.state_change.state.lock = common_pb2.LOCK_STATE_LOCKED
    await car.publish(spoofed)
    good = car.envelope()
    good.state_change.state.power = common_pb2.POWER_STATE_OFF
    await car.publish(good.SerializeToString()[:-2])  # truncated
    await car.publish(b"\x0a" + b"\x00" * (gateway.config.max_payload_bytes + 1))  # oversize
    await car.state(lock=common_pb2.LOCK_STATE_LOCKED)  # and then a valid one

    v = await eventually(lambda: get_vehicle(stub, VIN),
                         lambda v: v is not None and v.state.lock == common_pb2.LOCK_STATE_LOCKED)
    assert v is not None and v.state.power == common_pb2.POWER_STATE_ON  # truncated one not applied
    assert await get_vehicle(stub, VIN2) is None
    for reason in ("vin_mismatch", "malformed_protobuf", "oversize"):
        assert await metric(gateway, f'gateway_messages_rejected_total{{reason="{reason}"}}') == 1.0
    await car.close()


async def test_broker_acl_stops_a_vehicle_publishing_on_another_vins_topic(
    gateway: Gateway, channel: grpc.aio.Channel
) -> None:
    stub = vehicles_pb2_grpc.VehicleServiceStub(channel)
    car = TestVehicle(VIN, mqtt_port(gateway))
    await car.connect()
    other = TestVehicle(VIN2, mqtt_port(gateway))
    forged = other.envelope()
    forged.hello.connection_id = 1
    await car.publish(forged, topic=topics.uplink(VIN2))  # topic and envelope agree, client id not
    await car.state(lock=common_pb2.LOCK_STATE_LOCKED)
    await eventually(lambda: get_vehicle(stub, VIN),
                     lambda v: v is not None and v.state.lock == common_pb2.LOCK_STATE_LOCKED)
    assert await get_vehicle(stub, VIN2) is None
    await car.close()


async def test_list_vehicles_pages_through_every_vehicle_once(
    gateway: Gateway, channel: grpc.aio.Channel
) -> None:
    stub = vehicles_pb2_grpc.VehicleServiceStub(channel)
    vins = [f"WP0ZZZ99ZJS1000{i:02d}" for i in range(1, 8)]
    cars = [TestVehicle(v, mqtt_port(gateway)) for v in vins]
    for car in cars:
        await car.connect()

    async def count() -> int:
        return len((await stub.ListVehicles(vehicles_pb2.ListVehiclesRequest(page_size=1000))).vehicles)

    await eventually(count, lambda n: n == len(vins))
    listed, token = [], ""
    while True:
        page = await stub.ListVehicles(vehicles_pb2.ListVehiclesRequest(page_size=3, page_token=token))
        listed += [v.vin for v in page.vehicles]
        token = page.next_page_token
        if not token:
            break
    assert listed == sorted(vins)
    for car in cars:
        await car.close()


async def test_bad_grpc_arguments_get_clear_status_codes(channel: grpc.aio.Channel) -> None:
    stub = vehicles_pb2_grpc.VehicleServiceStub(channel)
    with pytest.raises(grpc.aio.AioRpcError) as bad_vin:
        await stub.GetVehicle(vehicles_pb2.GetVehicleRequest(vin="nope"))
    assert bad_vin.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "17" in (bad_vin.value.details() or "")
    with pytest.raises(grpc.aio.AioRpcError) as unknown:
        await stub.GetVehicle(vehicles_pb2.GetVehicleRequest(vin=VIN))
    assert unknown.value.code() is grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.aio.AioRpcError) as bad_page:
        await stub.ListVehicles(vehicles_pb2.ListVehiclesRequest(page_size=5000))
    assert bad_page.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.aio.AioRpcError) as bad_token:
        await stub.ListVehicles(vehicles_pb2.ListVehiclesRequest(page_token="%%%"))
    assert bad_token.value.code() is grpc.StatusCode.INVALID_ARGUMENT
