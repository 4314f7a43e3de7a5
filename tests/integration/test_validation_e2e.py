"""End to end: values out of range are rejected whole with their own reason, nothing of them
reaches a backend, and the car's next valid message is served (real Mosquitto and ejabberd,
real gRPC)."""

from __future__ import annotations

import asyncio
import math
import time

import grpc
import pytest
from ejabberd_support import BROKERS
from support import eventually, rejected, telemetry_subscribed
from vehicle_client import CarLink, TestVehicle

from gateway._gen.telematics.v1 import (
    common_pb2,
    telemetry_pb2,
    telemetry_pb2_grpc,
    uplink_pb2,
    vehicles_pb2,
    vehicles_pb2_grpc,
)
from gateway.app import Gateway

pytestmark = pytest.mark.integration

VIN = "WP0ZZZ99ZJS700001"


def charging(car: TestVehicle, session_id: str, energy_kwh: float) -> uplink_pb2.Envelope:
    env = car.envelope()
    cs = env.charging_session
    now = int(time.time())
    cs.session_id = session_id
    cs.started_at.seconds, cs.ended_at.seconds = now - 3600, now - 60
    cs.location.latitude, cs.location.longitude = 48.78, 9.18
    cs.energy_kwh, cs.cost_minor, cs.currency, cs.power_class = energy_kwh, 1_990, "EUR", "DC150"
    return env


@pytest.mark.parametrize("broker_kind", BROKERS)
async def test_nan_coordinates_and_negative_energy_are_rejected_and_the_next_message_is_served(
    gateway: Gateway, channel: grpc.aio.Channel, car_link: CarLink
) -> None:
    before = list(gateway.fanout.subscribers)
    records = telemetry_pb2_grpc.TelemetryServiceStub(channel).SubscribeTelemetry(
        telemetry_pb2.SubscribeTelemetryRequest()
    )
    first_records = asyncio.ensure_future(records.read())  # starts the call
    await telemetry_subscribed(gateway, before)
    events = vehicles_pb2_grpc.VehicleServiceStub(channel).WatchVehicleEvents(
        vehicles_pb2.WatchVehicleEventsRequest(vin=VIN)
    )
    car = car_link.vehicle(VIN, bearer=common_pb2.BEARER_EMBEDDED_SIM)
    await car.connect()
    online = await asyncio.wait_for(events.read(), 10)
    assert isinstance(online, vehicles_pb2.VehicleEvent) and online.WhichOneof("kind") == "online"

    nan = car.envelope()
    nan.telemetry.service = "car-finder"
    sample = nan.telemetry.samples.add()
    sample.location.latitude, sample.location.longitude = math.nan, 9.18
    await car.publish(nan)
    await car.publish(charging(car, "session-negative", -12.5))
    # The sentinels: the car's next valid messages.
    await car.publish(charging(car, "session-valid", 12.5))
    await car.telemetry("car-finder", lat=48.78, lon=9.18)
    sentinel = car.sequence

    # Nothing of the rejected envelopes reached either stream: the first item on each is a sentinel.
    batch = await asyncio.wait_for(first_records, 10)
    assert isinstance(batch, telemetry_pb2.TelemetryRecords)
    assert [(r.vin, r.sequence) for r in batch.records] == [(VIN, sentinel)]
    assert batch.records[0].sample.location.latitude == pytest.approx(48.78)
    recorded = await asyncio.wait_for(events.read(), 10)
    assert isinstance(recorded, vehicles_pb2.VehicleEvent)
    assert recorded.WhichOneof("kind") == "charging_session"
    assert recorded.charging_session.session.session_id == "session-valid"
    assert recorded.vehicle.last_sequence == sentinel - 1  # the rejected sequences changed nothing

    # Counted with their own reasons (the counters move in the same batch as the sentinels).
    await eventually(lambda: rejected(gateway, "bad_location"), lambda n: n == 1)
    await eventually(lambda: rejected(gateway, "bad_charging_session"), lambda n: n == 1)
    records.cancel()
    events.cancel()
    await car.close()
