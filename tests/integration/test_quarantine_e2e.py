"""Acceptance: a car flooding far over its limit is quarantined at the managed broker (its
uplink is dropped there, on both listeners), the other cars are served throughout, and after
the quarantine it is let in again. Real Mosquitto, real gateway, real gRPC.

The flooder is a raw MQTT 5 connection publishing QoS 1, so that the test reads the broker's
own answer to each message: PUBACK "success" while the broker forwards, "not authorized"
(0x87) once it drops (README "Limits"). The gateway's clock is a ManualClock: the quarantine
ends when the test moves it.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from support import eventually, free_port, gateway_channel, gateway_config, scraped
from test_car_identity import car_tls, get_vehicle, is_locked
from vehicle_client import TestVehicle

from gateway import topics
from gateway._gen.telematics.v1 import common_pb2, vehicles_pb2_grpc
from gateway.app import Gateway
from gateway.clock import ManualClock
from load import frames

pytestmark = pytest.mark.integration

FLOODER = "WP0ZZZ99ZJS730001"
QUIET = "WP0ZZZ99ZJS730002"
BURST = 5
EXCESS = 10
QUARANTINE_S = 60.0
NOT_AUTHORIZED = 0x87


class RawCar:
    """One MQTT 5 connection that publishes QoS 1 and returns each PUBACK's reason code."""

    def __init__(self, vin: str) -> None:
        self.vin = vin
        self._reader = frames.FrameReader()
        self._packet_id = 0

    async def connect(self, port: int, tls: ssl.SSLContext | None = None) -> None:
        self.r, self.w = await asyncio.open_connection("127.0.0.1", port, ssl=tls)
        self.w.write(frames.connect(self.vin, keepalive=60))
        (connack,) = await self._packets(1)
        assert connack.kind == frames.CONNACK and connack.reason_code == 0, connack

    async def _packets(self, n: int) -> list[frames.Packet]:
        got: list[frames.Packet] = []
        while len(got) < n:
            data = await asyncio.wait_for(self.r.read(65536), 10)
            assert data, "the broker closed the connection"
            got += self._reader.feed(data)
        return got

    async def publish(self, payload: bytes, n: int = 1) -> list[int]:
        """Publish ``payload`` n times on the car's uplink; the reason codes of the PUBACKs."""
        for _ in range(n):
            self._packet_id = self._packet_id % 0xFFFF + 1
            self.w.write(frames.publish(topics.uplink(self.vin), payload, qos=1, packet_id=self._packet_id))
        acks = await self._packets(n)
        assert all(p.kind == frames.PUBACK for p in acks), acks
        return [p.reason_code for p in acks]

    async def close(self) -> None:
        self.w.close()
        await self.w.wait_closed()


def locked_hello(vin: str) -> bytes:
    """A valid Hello envelope of ``vin`` reporting the car locked."""
    env = TestVehicle(vin, 0).envelope()
    env.hello.connection_id = 1
    env.hello.boot = True
    env.hello.model, env.hello.model_year, env.hello.home_country = "911", 2018, "DE"
    env.hello.state.power = common_pb2.POWER_STATE_OFF
    env.hello.state.lock = common_pb2.LOCK_STATE_LOCKED
    env.hello.state.charging_plug = common_pb2.CHARGING_PLUG_DISCONNECTED
    return env.SerializeToString()


@pytest.fixture
async def quarantining_gateway(tmp_path: Path) -> AsyncIterator[tuple[Gateway, ManualClock]]:
    clock = ManualClock(start=time.time())  # no token refills and no release until the test says
    config = gateway_config(tmp_path, free_port(), car_rate_per_s=1.0, car_burst=BURST,
                            car_quarantine_excess=EXCESS, car_quarantine_s=QUARANTINE_S)
    gw = Gateway(config, clock=clock)
    await gw.start()
    try:
        yield gw, clock
    finally:
        await gw.stop()


@pytest.mark.parametrize("listener", ["plain", "tls"])
async def test_a_flooding_car_is_dropped_by_the_broker_while_others_are_served_and_let_in_afterwards(
    quarantining_gateway: tuple[Gateway, ManualClock], tmp_path: Path, listener: str
) -> None:
    gw, clock = quarantining_gateway
    tls = car_tls(gw, tmp_path, FLOODER) if listener == "tls" else None
    flooder = RawCar(FLOODER)
    await flooder.connect(gw.config.mqtt_tls_port if tls else gw.config.mqtt_port, tls)
    quiet = TestVehicle(QUIET, gw.config.mqtt_port, bearer=common_pb2.BEARER_EMBEDDED_SIM)
    await quiet.connect()

    # Its burst, then more than EXCESS over the limit: all accepted by the broker (forwarded),
    # the excess refused by the gateway.
    garbage = b"\xff\xfe not an envelope"
    assert await flooder.publish(garbage, BURST + EXCESS + 1) == [0] * (BURST + EXCESS + 1)
    assert await eventually(lambda: scraped(gw, "gateway_car_quarantines_total"), lambda v: v == 1) == 1
    assert await scraped(gw, "gateway_cars_quarantined") == 1

    # The broker was told: soon it answers "not authorized" and forwards nothing of the car.
    async def refused() -> list[int]:
        return await flooder.publish(garbage)

    await eventually(refused, lambda codes: codes == [NOT_AUTHORIZED])
    assert await scraped(gw, "gateway_quarantine_order_failures_total") == 0

    # Meanwhile the other car is served in full.
    async with gateway_channel(gw) as channel:
        stub = vehicles_pb2_grpc.VehicleServiceStub(channel)
        await quiet.state(lock=common_pb2.LOCK_STATE_LOCKED)
        await eventually(lambda: get_vehicle(stub, QUIET), is_locked)

        # After the quarantine (the clock moved; the gateway's next tick sees it) the broker
        # forwards the car's messages again, and a valid one changes its state.
        clock.advance(QUARANTINE_S + 1)
        assert await eventually(lambda: scraped(gw, "gateway_cars_quarantined"), lambda v: v == 0) == 0
        await eventually(refused, lambda codes: codes == [0])
        assert await flooder.publish(locked_hello(FLOODER)) == [0]
        await eventually(lambda: get_vehicle(stub, FLOODER), is_locked)
    await flooder.close()
    await quiet.close()


async def test_a_car_within_its_burst_is_never_quarantined(
    quarantining_gateway: tuple[Gateway, ManualClock],
) -> None:
    gw, _ = quarantining_gateway
    car = RawCar(FLOODER)
    await car.connect(gw.config.mqtt_port)
    # Exactly EXCESS over its burst: refused by the bucket, not yet a flood.
    assert await car.publish(b"garbage", BURST + EXCESS) == [0] * (BURST + EXCESS)
    sentinel = TestVehicle(QUIET, gw.config.mqtt_port, bearer=common_pb2.BEARER_EMBEDDED_SIM)
    await sentinel.connect()  # processed after the car's messages: the pipeline has seen them all
    async with gateway_channel(gw) as channel:
        await eventually(lambda: get_vehicle(vehicles_pb2_grpc.VehicleServiceStub(channel), QUIET),
                         lambda v: v is not None)
    assert await scraped(gw, 'gateway_messages_rejected_total{reason="rate_limited"}') == EXCESS
    assert await scraped(gw, "gateway_car_quarantines_total") == 0
    await car.close()
    await sentinel.close()

