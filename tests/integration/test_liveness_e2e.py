"""Presence that does not depend on the MQTT will alone.

* A car whose connection ends without a will (a client that set none) goes offline with reason
  TIMEOUT once it has been silent for 3 announced heartbeat intervals plus its R20 presence
  grace, also across a gateway restart; remote commands to it then fail.
* A car that publishes its own will while connected is offline only until its next envelope.
The gateway's clock is moved by the test; the app's presence tick does the rest.
"""

from __future__ import annotations

import time
from pathlib import Path

import grpc
import pytest
from support import eventually, free_port, gateway_channel
from vehicle_client import TestVehicle

from gateway._gen.telematics.v1 import common_pb2, uplink_pb2, vehicles_pb2, vehicles_pb2_grpc
from gateway.app import Gateway
from gateway.clock import ManualClock
from gateway.config import load_config

pytestmark = pytest.mark.integration

VIN = "WP0ZZZ99ZJS600001"
OTHER_VIN = "WP0ZZZ99ZJS600002"


async def vehicle(gw: Gateway, vin: str = VIN) -> vehicles_pb2.Vehicle:
    async with gateway_channel(gw) as ch:
        stub = vehicles_pb2_grpc.VehicleServiceStub(ch)
        v: vehicles_pb2.Vehicle = await stub.GetVehicle(vehicles_pb2.GetVehicleRequest(vin=vin))
        return v


async def events_of(gw: Gateway, vin: str = VIN) -> list[vehicles_pb2.VehicleEvent]:
    rows = await gw.store.read_events(0, 100, vin)
    return [vehicles_pb2.VehicleEvent.FromString(r.payload) for r in rows]


async def kinds(gw: Gateway, vin: str = VIN) -> list[str]:
    return [e.WhichOneof("kind") or "" for e in await events_of(gw, vin)]


async def send_command(gw: Gateway) -> grpc.StatusCode:
    async with gateway_channel(gw) as ch:
        try:
            await vehicles_pb2_grpc.VehicleServiceStub(ch).SendRemoteCommand(
                vehicles_pb2.SendRemoteCommandRequest(vin=VIN, name="flash-lights")
            )
        except grpc.aio.AioRpcError as exc:
            return exc.code()
        return grpc.StatusCode.OK


def car_without_will(gw: Gateway) -> TestVehicle:
    # Inserted SIM on 4G: R20 presence grace of 60 s (roaming/presence.toml).
    car = TestVehicle(VIN, gw.config.mqtt_port, bearer=common_pb2.BEARER_INSERTED_SIM,
                      radio=common_pb2.RADIO_4G)
    car.heartbeat_interval_s = 10
    return car


async def test_car_that_goes_silent_without_a_will_goes_offline_with_reason_timeout(
    clocked_gateway: tuple[Gateway, ManualClock],
) -> None:
    gw, clock = clocked_gateway
    car = car_without_will(gw)
    await car.connect(with_will=False)
    await car.heartbeat()
    await eventually(lambda: kinds(gw), lambda k: k == ["online"])
    assert await send_command(gw) is grpc.StatusCode.OK
    car.cut()  # the connection ends; there is no will to tell the gateway
    clock.advance(3 * 10 + 60 + 1)  # three missed heartbeats plus the R20 grace
    await eventually(lambda: kinds(gw), lambda k: k == ["online", "offline"])
    offline = (await events_of(gw))[-1]
    assert offline.offline.reason == vehicles_pb2.OFFLINE_REASON_TIMEOUT
    v = await vehicle(gw)
    assert v.presence == vehicles_pb2.PRESENCE_OFFLINE
    assert v.offline_reason == vehicles_pb2.OFFLINE_REASON_TIMEOUT
    assert await send_command(gw) is grpc.StatusCode.FAILED_PRECONDITION
    assert gw.metrics.registry.get_sample_value("gateway_presence_timeouts_total") == 1


async def test_silent_car_goes_offline_after_a_gateway_restart(tmp_path: Path) -> None:
    config = load_config(env={}, data_dir=str(tmp_path / "data"), mqtt_port=free_port(),
                         grpc_listen="127.0.0.1:0", http_listen="127.0.0.1:0", mqtt_tls_port=free_port())
    first = Gateway(config, clock=ManualClock(start=time.time()))
    await first.start()
    car = car_without_will(first)
    try:
        await car.connect(with_will=False)
        await eventually(lambda: kinds(first), lambda k: k == ["online"])
        car.cut()
    finally:
        await first.stop()
    clock = ManualClock(start=time.time() + 9 * 60)  # seen again 9 minutes later
    second = Gateway(config, clock=clock)
    await second.start()
    try:
        assert (await vehicle(second)).presence == vehicles_pb2.PRESENCE_ONLINE  # as stored
        clock.advance(3 * 10 + 60 + 1)  # queued messages had their chance: the car is gone
        await eventually(lambda: kinds(second), lambda k: k == ["online", "offline"])
        assert (await vehicle(second)).offline_reason == vehicles_pb2.OFFLINE_REASON_TIMEOUT
        assert await send_command(second) is grpc.StatusCode.FAILED_PRECONDITION
    finally:
        await second.stop()


async def test_a_will_the_car_publishes_itself_holds_only_until_its_next_envelope(gateway: Gateway) -> None:
    # Embedded SIM: no presence grace, so a will takes the car offline at once.
    car = TestVehicle(VIN, gateway.config.mqtt_port, bearer=common_pb2.BEARER_EMBEDDED_SIM)
    other = TestVehicle(OTHER_VIN, gateway.config.mqtt_port, bearer=common_pb2.BEARER_EMBEDDED_SIM)
    await car.connect()
    await other.connect()
    await eventually(lambda: kinds(gateway), lambda k: k == ["online"])
    # Another car cannot publish on this car's will topic (the ACL keeps it to its own VIN).
    await other.publish(car_will(car), topic=f"v1/vehicles/{VIN}/will")
    await car.state(lock=common_pb2.LOCK_STATE_LOCKED)  # sentinel: after the refused will
    await eventually(lambda: kinds(gateway), lambda k: k == ["online", "state_changed"])
    # The car itself may (Mosquitto needs its write permission to publish its real will).
    await car.publish_own_will()
    await eventually(lambda: kinds(gateway), lambda k: k[-1:] == ["offline"])
    assert await send_command(gateway) is grpc.StatusCode.FAILED_PRECONDITION
    await car.heartbeat()  # any new envelope of the still-connected car brings it back
    await eventually(lambda: kinds(gateway), lambda k: k == ["online", "state_changed", "offline", "online"])
    assert (await vehicle(gateway)).presence == vehicles_pb2.PRESENCE_ONLINE
    assert await send_command(gateway) is grpc.StatusCode.OK
    await car.close()
    await other.close()


def car_will(car: TestVehicle) -> bytes:
    return uplink_pb2.LastWill(vin=car.vin, connection_id=car.connection_id).SerializeToString()
