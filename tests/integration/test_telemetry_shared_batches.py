"""SubscribeTelemetry over real gRPC with several subscribers: the live sink serializes each batch
once per filter and sends those bytes as they are (gateway/egress/telemetry.py). Every stream
still receives complete, correct records, a filter still selects its services, and R22's
withheld location stays withheld."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from support import telemetry_subscribed
from vehicle_client import TestVehicle

from gateway._gen.telematics.v1 import common_pb2, telemetry_pb2, telemetry_pb2_grpc
from gateway.app import Gateway

pytestmark = pytest.mark.integration

VIN = "WP0ZZZ99ZJS700077"
class Subscription:
    """One SubscribeTelemetry stream of the test's client."""

    def __init__(self, channel: grpc.aio.Channel, services: list[str]) -> None:
        self.call = telemetry_pb2_grpc.TelemetryServiceStub(channel).SubscribeTelemetry(
            telemetry_pb2.SubscribeTelemetryRequest(services=services)
        )
        # The first read starts the call (the server sends nothing before the first batch).
        self.first: asyncio.Future[object] = asyncio.ensure_future(self.call.read())

    async def records(self, n: int) -> list[telemetry_pb2.TelemetryRecord]:
        out: list[telemetry_pb2.TelemetryRecord] = []
        pending: asyncio.Future[object] | None = self.first
        while len(out) < n:
            batch = await asyncio.wait_for(pending if pending is not None else self.call.read(), 20)
            pending = None
            assert isinstance(batch, telemetry_pb2.TelemetryRecords)
            out.extend(batch.records)
        return out


async def subscribe(gateway: Gateway, channel: grpc.aio.Channel, services: list[str]) -> Subscription:
    before = list(gateway.fanout.subscribers)
    sub = Subscription(channel, services)
    await telemetry_subscribed(gateway, before)
    return sub


async def test_subscribers_with_the_same_filter_receive_identical_records_and_filters_still_apply(
    gateway: Gateway, channel: grpc.aio.Channel
) -> None:
    every_a = await subscribe(gateway, channel, [])
    every_b = await subscribe(gateway, channel, [])
    finder_only = await subscribe(gateway, channel, ["car-finder"])
    car = TestVehicle(VIN, gateway.config.mqtt_port, model="911", model_year=2018,
                      bearer=common_pb2.BEARER_EMBEDDED_SIM)
    # R22: privacy covers car-finder only: its records lose the location, charging's keep it.
    car.privacy = common_pb2.Privacy(mode=common_pb2.PRIVACY_MODE_PER_SERVICE, services=["car-finder"])
    await car.connect()
    await car.telemetry("car-finder", lat=48.78, lon=9.18, n=2)
    finder_seq = car.sequence
    await car.telemetry("charging", lat=48.79, lon=9.19)
    charging_seq = car.sequence
    # The sentinel: once the filtered stream has it, the charging record before it would have
    # reached that stream too, had the filter let it through.
    await car.telemetry("car-finder", lat=48.77, lon=9.17)
    sentinel_seq = car.sequence

    a = await every_a.records(4)
    b = await every_b.records(4)
    only = await finder_only.records(3)

    assert [(r.vin, r.sequence, r.service) for r in a] == [
        (VIN, finder_seq, "car-finder"), (VIN, finder_seq, "car-finder"), (VIN, charging_seq, "charging"),
        (VIN, sentinel_seq, "car-finder"),
    ]
    assert [r.SerializeToString() for r in b] == [r.SerializeToString() for r in a]
    assert only == [a[0], a[1], a[3]]  # the filtered stream: the car-finder records, nothing else
    for withheld in (a[0], a[1], a[3]):
        assert withheld.location_withheld and not withheld.sample.HasField("location")
        assert withheld.signals_withheld == 1 and not withheld.sample.signals  # speed_kmh: not public
        assert withheld.HasField("sent_at") and withheld.sample.HasField("sampled_at")
    kept = a[2]
    assert not kept.location_withheld and kept.sample.location.latitude == pytest.approx(48.79)
    assert [s.name for s in kept.sample.signals] == ["speed_kmh"]
    for sub in (every_a, every_b, finder_only):
        sub.call.cancel()
    await car.close()
