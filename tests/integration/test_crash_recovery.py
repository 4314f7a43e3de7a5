"""Nothing lost: QoS 1 messages the broker accepted survive a SIGKILL of the gateway."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import grpc
import pytest
from test_cli_run import RunningGateway
from vehicle_client import TestVehicle

from gateway._gen.telematics.v1 import common_pb2, vehicles_pb2, vehicles_pb2_grpc
from gateway.broker.managed import ManagedBroker

pytestmark = pytest.mark.integration

VIN = "WP0ZZZ99ZJS200001"
CHANGES = 300


async def read_log(port: int, expected: int) -> list[vehicles_pb2.VehicleEvent]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
        stub = vehicles_pb2_grpc.VehicleServiceStub(ch)
        stream = stub.WatchVehicleEvents(vehicles_pb2.WatchVehicleEventsRequest(vin=VIN))
        events: list[vehicles_pb2.VehicleEvent] = []
        it = aiter(stream)
        # Up to 20 s for the expected events, then 1 s more in which any extra (a repeat) shows.
        while True:
            try:
                events.append(await asyncio.wait_for(anext(it), 20 if len(events) < expected else 1))
            except TimeoutError:
                break
        stream.cancel()
        return events


async def test_sigkill_mid_stream_loses_and_repeats_no_state_change(
    tmp_path: Path, broker: ManagedBroker
) -> None:
    assert broker.credentials is not None
    url = f"mqtt://{broker.credentials.username}:{broker.credentials.password}@127.0.0.1:{broker.port}"
    first = RunningGateway(tmp_path, "--mqtt-url", url)
    first.wait_ready()
    car = TestVehicle(VIN, broker.port)
    await car.connect()
    locks = [common_pb2.LOCK_STATE_LOCKED, common_pb2.LOCK_STATE_UNLOCKED]
    for i in range(CHANGES):
        if i == CHANGES // 3:
            first.stop(signal.SIGKILL)  # crash: whatever it had not acked, the broker keeps
        await car.state(lock=locks[i % 2])
    second = RunningGateway(tmp_path, "--mqtt-url", url)
    try:
        second.wait_ready()
        events = await read_log(second.grpc_port, 1 + CHANGES)
    finally:
        code, out = second.stop()
    await car.close()
    assert code == 0, out
    kinds = [e.WhichOneof("kind") for e in events]
    assert kinds == ["online"] + ["state_changed"] * CHANGES, kinds[:5]
    cursors = [e.cursor for e in events]
    assert cursors == sorted(set(cursors))
    assert events[-1].vehicle.state.lock == locks[(CHANGES - 1) % 2]
    assert events[-1].vehicle.last_sequence == CHANGES + 1
