"""One car whose messages reach two gateways (ingest slots on Mosquitto: the shared messages go
round robin). Each gateway refreshes the car from the store before applying a batch, and a
batch whose snapshot lost the race at commit is applied again on the fresh state
(gateway/pipeline/), so the stored car and its event log are what one gateway would have made.

Real parts: one Mosquitto, one PostgreSQL, two in-process gateways each holding one of two
ingest slots of one shared subscription, the car on aiomqtt."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from support import eventually, gateway_channel
from test_ingest_slots import fleet_config, processed, settled
from test_walking_skeleton import get_vehicle
from vehicle_client import TestVehicle

from gateway._gen.telematics.v1 import common_pb2, uplink_pb2, vehicles_pb2, vehicles_pb2_grpc
from gateway.app import Gateway
from gateway.broker.managed import ManagedBroker

pytestmark = pytest.mark.integration

VIN = "WP0ZZZ99ZJS100201"
LOCKED, UNLOCKED = common_pb2.LOCK_STATE_LOCKED, common_pb2.LOCK_STATE_UNLOCKED


def both(a: Gateway, b: Gateway) -> int:
    return processed(a) + processed(b)


async def all_processed(a: Gateway, b: Gateway, sent: int) -> None:
    """The gateways together processed `sent` messages (each message reaches one of them)."""
    await eventually(lambda: asyncio.sleep(0, both(a, b)), lambda n: n >= sent)


def duplicates(*gateways: Gateway) -> float:
    return sum(
        g.metrics.registry.get_sample_value("gateway_messages_stale_total", {"outcome": "duplicate"}) or 0
        for g in gateways
    )


async def test_one_cars_messages_spread_over_two_gateways_leave_its_state_and_event_log_right(
    tmp_path: Path, broker: ManagedBroker, pg_url: str
) -> None:
    a = Gateway(fleet_config(tmp_path / "a", broker, pg_url))
    b = Gateway(fleet_config(tmp_path / "b", broker, pg_url))
    await a.start()
    await b.start()
    car = TestVehicle(VIN, broker.port)
    try:
        await settled(a, b)
        await car.connect(with_will=False, lock=UNLOCKED)
        sent, resent = 1, 0
        await all_processed(a, b, sent)
        changes: list[tuple[int, int]] = []  # (sequence, lock) of every state change sent

        async def state_change(lock: common_pb2.LockState.ValueType) -> uplink_pb2.Envelope:
            nonlocal sent
            env = car.envelope()
            env.state_change.state.lock = lock
            await car.publish(env)
            changes.append((env.sequence, lock))
            sent += 1
            return env

        for i in range(16):
            # One at a time (each processed before the next is sent): the broker alternates
            # them between the gateways, so each applies a change over the other's.
            env = await state_change(LOCKED if i % 2 == 0 else UNLOCKED)
            if i % 4 == 3:
                await car.publish(env)  # the car sends it again (QoS 1 redelivery): a duplicate
                sent += 1
                resent += 1
            await all_processed(a, b, sent)
        # A burst: both gateways apply the car's messages at the same time, from the same
        # stored version; whichever commits second must apply its batch again.
        for _ in range(60):
            await car.heartbeat()
        sent += 60
        await state_change(LOCKED)  # the known final state
        await all_processed(a, b, sent)

        assert processed(a) > 0 and processed(b) > 0  # the broker did spread the car's messages
        assert duplicates(a, b) == resent
        async with gateway_channel(a) as channel_a, gateway_channel(b) as channel_b:
            for channel in (channel_a, channel_b):
                found = await get_vehicle(vehicles_pb2_grpc.VehicleServiceStub(channel), VIN)
                assert found is not None
                assert (found.state.lock, found.last_sequence) == (LOCKED, car.sequence)
        stored = await a.store.read_events(0, 1000, VIN)
        events = [vehicles_pb2.VehicleEvent.FromString(e.payload) for e in stored]
        lock_changes = [
            (e.vehicle.last_sequence, e.vehicle.state.lock)
            for e in events
            if e.WhichOneof("kind") == "state_changed" and "state.lock" in e.state_changed.changed
        ]
        assert lock_changes == changes  # each once, in sequence order
        assert [e.WhichOneof("kind") for e in events].count("online") == 1
    finally:
        await car.close()
        await b.stop()
        await a.stop()
