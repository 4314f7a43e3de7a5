"""Nothing lost, nothing applied twice: QoS 1 messages survive a SIGKILL of the gateway that lands
between the store commit of a batch and its acknowledgement to the broker.

The kill is placed there by the gateway's test-only fault injection (GATEWAY_TEST_KILL, see
gateway/faults.py): a signal sent from the test would hit that window only by chance.
"""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import pytest
from support import suite_channel
from test_cli_run import RunningGateway
from vehicle_client import TestVehicle

from gateway._gen.telematics.v1 import common_pb2, vehicles_pb2, vehicles_pb2_grpc
from gateway.broker.managed import ManagedBroker

pytestmark = pytest.mark.integration

VIN = "WP0ZZZ99ZJS200001"
CHANGES = 300
KILL_AT = 100  # the batch holding the 100th message is committed, then the process dies
LOCKS = [common_pb2.LOCK_STATE_LOCKED, common_pb2.LOCK_STATE_UNLOCKED]


async def read_events(port: int, count: int, after: int = 0) -> list[vehicles_pb2.VehicleEvent]:
    """The next `count` events of the car's log after cursor `after` (replayed, then followed)."""
    async with suite_channel(port) as ch:
        stub = vehicles_pb2_grpc.VehicleServiceStub(ch)
        stream = stub.WatchVehicleEvents(vehicles_pb2.WatchVehicleEventsRequest(vin=VIN, after_cursor=after))
        it = aiter(stream)
        events = [await asyncio.wait_for(anext(it), 20) for _ in range(count)]
        stream.cancel()
        return events


def metric(gw: RunningGateway, line_start: str) -> float:
    for line in gw.http("/metrics")[1].splitlines():
        if line.startswith(line_start):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


async def test_sigkill_between_commit_and_ack_loses_and_repeats_no_state_change(
    tmp_path: Path, broker: ManagedBroker
) -> None:
    assert broker.credentials is not None
    url = f"mqtt://{broker.credentials.username}:{broker.credentials.password}@127.0.0.1:{broker.port}"
    first = RunningGateway(tmp_path, "--mqtt-url", url, env={"GATEWAY_TEST_KILL": f"before_ack:{KILL_AT}"})
    first.wait_ready()
    car = TestVehicle(VIN, broker.port)
    await car.connect()
    for i in range(CHANGES):  # the broker accepts each (QoS 1), whether the gateway lives or not
        await car.state(lock=LOCKS[i % 2])
    await asyncio.to_thread(first.proc.wait, 30)
    code, out = first.stop()
    assert code == -signal.SIGKILL and "SIGKILL at before_ack" in out, out

    second = RunningGateway(tmp_path, "--mqtt-url", url)
    try:
        second.wait_ready()
        events = await read_events(second.grpc_port, 1 + CHANGES)
        # A sentinel: one more change, published after everything else by the same car. The
        # pipeline applies messages in the broker's order, so a repeat of any earlier change
        # would be in the log before it; the sentinel must be the very next event.
        await car.state(lock=LOCKS[CHANGES % 2])
        [sentinel] = await read_events(second.grpc_port, 1, after=events[-1].cursor)
        # The batch the first process committed but never acknowledged came again, and the
        # replay window dropped it (R-sequence: a number seen before is a duplicate).
        duplicates = metric(second, 'gateway_messages_stale_total{outcome="duplicate"}')
    finally:
        code, out = second.stop()
    await car.close()
    assert code == 0, out
    # Every message changes the lock, so a lost one would make its successor no change at all,
    # and a repeat would be one change too many: exactly CHANGES changes, none lost or repeated.
    kinds = [e.WhichOneof("kind") for e in events]
    assert kinds == ["online"] + ["state_changed"] * CHANGES, kinds[:5]
    cursors = [e.cursor for e in events]
    assert cursors == sorted(set(cursors))
    assert events[-1].vehicle.state.lock == LOCKS[(CHANGES - 1) % 2]
    assert sentinel.WhichOneof("kind") == "state_changed" and sentinel.vehicle.last_sequence == CHANGES + 2
    assert duplicates >= 1, "no redelivered message was recognised as a duplicate (replay window)"
