"""Sequence numbers must never freeze a car: a far-ahead number and a head-unit reset.

Through the real broker, gateway, SQLite and gRPC: state changes, telemetry and charging
records (R28: carried without loss) keep arriving from a car that once sent a sequence far
ahead and from a car whose new head unit counts from 1 again under a new sequence epoch.
"""

from __future__ import annotations

import asyncio

import pytest
from support import eventually, gateway_channel, telemetry_subscribed
from vehicle_client import TestVehicle

from gateway._gen.telematics.v1 import (
    common_pb2,
    telemetry_pb2,
    telemetry_pb2_grpc,
    vehicles_pb2,
    vehicles_pb2_grpc,
)
from gateway.app import Gateway

pytestmark = pytest.mark.integration

FAR_VIN = "WP0ZZZ99ZJS500001"
RESET_VIN = "WP0ZZZ99ZJS500002"


async def events_of(gw: Gateway, vin: str) -> list[vehicles_pb2.VehicleEvent]:
    rows = await gw.store.read_events(0, 1000, vin)
    return [vehicles_pb2.VehicleEvent.FromString(r.payload) for r in rows]


async def kinds_of(gw: Gateway, vin: str) -> list[str]:
    return [e.WhichOneof("kind") or "" for e in await events_of(gw, vin)]


async def charging_ids(gw: Gateway, vin: str) -> list[str]:
    return [e.charging_session.session.session_id for e in await events_of(gw, vin)
            if e.WhichOneof("kind") == "charging_session"]


async def lock_of(gw: Gateway, vin: str) -> int:
    async with gateway_channel(gw) as ch:
        v = await vehicles_pb2_grpc.VehicleServiceStub(ch).GetVehicle(vehicles_pb2.GetVehicleRequest(vin=vin))
        return int(v.state.lock)


def metric(gw: Gateway, name: str, labels: dict[str, str]) -> float:
    return gw.metrics.registry.get_sample_value(name, labels) or 0.0


async def test_cars_that_sent_a_far_ahead_sequence_or_restarted_counting_keep_delivering(
    gateway: Gateway,
) -> None:
    async with gateway_channel(gateway) as ch:
        before = list(gateway.fanout.subscribers)
        stream = telemetry_pb2_grpc.TelemetryServiceStub(ch).SubscribeTelemetry(
            telemetry_pb2.SubscribeTelemetryRequest()
        )
        reader = asyncio.ensure_future(stream.read())  # starts the call
        await telemetry_subscribed(gateway, before)

        # A car of the old contract (no epoch) sends one envelope far ahead, says goodbye,
        # reboots: it must keep delivering.
        far = TestVehicle(FAR_VIN, gateway.config.mqtt_port)
        await far.connect()
        bad = far.envelope()
        bad.sequence = 9223372036854775808
        bad.state_change.state.lock = common_pb2.LOCK_STATE_LOCKED
        await far.publish(bad)
        await far.goodbye()
        await far.connect(boot=True)
        await far.state(lock=common_pb2.LOCK_STATE_LOCKED)
        await far.telemetry("remote-services", lat=11.0)
        await far.charging_session("far-1")

        # A car whose head unit is replaced: a new epoch, counting from 1 again.
        reset = TestVehicle(RESET_VIN, gateway.config.mqtt_port)
        reset.reset_head_unit()
        reset.sequence = 5000  # years of messages under the old head unit
        await reset.connect()
        await reset.state(lock=common_pb2.LOCK_STATE_LOCKED)
        await reset.goodbye()
        old_epoch, old_sequence = reset.sequence_epoch, reset.sequence
        reset.reset_head_unit()
        await reset.connect(boot=True)  # the Hello carries lock UNLOCKED (the full state)
        await reset.state(lock=common_pb2.LOCK_STATE_LOCKED)
        # A QoS 1 redelivery of the old head unit arriving after the reset must not regress it.
        stale = reset.envelope()
        reset.sequence -= 1
        stale.sequence_epoch, stale.sequence = old_epoch, old_sequence + 1
        stale.state_change.state.lock = common_pb2.LOCK_STATE_UNLOCKED
        await reset.publish(stale)
        await reset.telemetry("remote-services", lat=22.0)
        await reset.charging_session("reset-1")

        lats: dict[str, list[float]] = {FAR_VIN: [], RESET_VIN: []}
        batch = await asyncio.wait_for(reader, 10)
        while True:
            for rec in batch.records:
                if rec.vin in lats:
                    lats[rec.vin].append(rec.sample.location.latitude)
            if lats[FAR_VIN] and lats[RESET_VIN]:
                break
            batch = await asyncio.wait_for(stream.read(), 10)
        stream.cancel()
        assert lats == {FAR_VIN: [11.0], RESET_VIN: [22.0]}

    await eventually(lambda: charging_ids(gateway, FAR_VIN), lambda ids: ids == ["far-1"])
    await eventually(lambda: charging_ids(gateway, RESET_VIN), lambda ids: ids == ["reset-1"])
    # far: online, offline (goodbye), online (boot), lock changed, charging session
    assert await kinds_of(gateway, FAR_VIN) == [
        "online", "offline", "online", "state_changed", "charging_session",
    ]
    assert await lock_of(gateway, FAR_VIN) == common_pb2.LOCK_STATE_LOCKED
    # reset: the old head unit's life, then the new one's; the stale redelivery changed nothing
    assert await kinds_of(gateway, RESET_VIN) == [
        "online", "state_changed", "offline", "online", "state_changed", "charging_session",
    ]
    assert await lock_of(gateway, RESET_VIN) == common_pb2.LOCK_STATE_LOCKED
    async def counted() -> tuple[float, float]:
        return (metric(gateway, "gateway_messages_rejected_total", {"reason": "sequence_jump"}),
                metric(gateway, "gateway_messages_stale_total", {"outcome": "late"}))

    await eventually(counted, lambda c: c == (1, 1))
    [vehicle_event] = [e for e in await events_of(gateway, RESET_VIN)][-1:]
    assert vehicle_event.vehicle.sequence_epoch == reset.sequence_epoch
    await far.close()
    await reset.close()
