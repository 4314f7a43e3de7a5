"""Nothing lost, nothing billed twice: SIGKILL the gateway around entitlement milestones.

Kills inside the ingest path are placed by the gateway's test-only fault injection
(GATEWAY_TEST_KILL, gateway/faults.py), so they land in the window under test every time.
"""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import pytest
from support import eventually, suite_channel
from test_cli_run import RunningGateway
from vehicle_client import TestVehicle

from gateway._gen.telematics.v1 import common_pb2, uplink_pb2
from gateway._gen.telematics.v1 import entitlements_pb2 as pb
from gateway._gen.telematics.v1 import entitlements_pb2_grpc as pb_grpc
from gateway.broker.managed import ManagedBroker

pytestmark = pytest.mark.integration

VIN = "WP0ZZZ99ZJS700001"
OWNER = "owner@example.com"


def start(tmp_path: Path, broker: ManagedBroker, kill: str = "") -> RunningGateway:
    assert broker.credentials is not None
    c = broker.credentials
    env = {"GATEWAY_FOD_IDLE_S": "1"}
    if kill:
        env["GATEWAY_TEST_KILL"] = kill
    gw = RunningGateway(
        tmp_path,
        "--mqtt-url", f"mqtt://{c.username}:{c.password}@127.0.0.1:{broker.port}",
        env=env,
    )
    gw.wait_ready()
    return gw


def order(order_id: str, product: str, kind: pb.EntitlementKind.ValueType) -> pb.GrantRequest:
    return pb.GrantRequest(order_id=order_id, vin=VIN, product_id=product, kind=kind,
                           purchaser=OWNER, purchaser_role=pb.PURCHASER_ROLE_OWNER)


async def stub_call(port: int, call: str, request: object) -> object:
    async with suite_channel(port) as ch:
        return await getattr(pb_grpc.EntitlementServiceStub(ch), call)(request)


async def state(port: int, entitlement_id: str) -> int:
    async with suite_channel(port) as ch:
        stub = pb_grpc.EntitlementServiceStub(ch)
        e: pb.Entitlement = await stub.GetEntitlement(pb.GetEntitlementRequest(entitlement_id=entitlement_id))
        return int(e.state)


async def set_owner(port: int) -> None:
    await stub_call(port, "SetVehicleOwner", pb.SetVehicleOwnerRequest(vin=VIN, owner=OWNER))


async def grant(port: int, request: pb.GrantRequest) -> pb.Entitlement:
    async with suite_channel(port) as ch:
        granted: pb.Entitlement = await pb_grpc.EntitlementServiceStub(ch).Grant(request)
        return granted


async def events_through_sentinel(port: int) -> list[pb.EntitlementEvent]:
    """Every event from cursor 0, the way a backend resuming from scratch reads them, up to now.

    "Up to now" without waiting for silence: a sentinel grant is made first, and the log is read
    until its GRANTED event. Everything committed before the grant has a smaller cursor."""
    sentinel = await grant(port, order("sentinel", "remote-services", pb.ENTITLEMENT_KIND_SERVICE))
    async with suite_channel(port) as ch:
        call = pb_grpc.EntitlementServiceStub(ch).WatchEntitlementEvents(
            pb.WatchEntitlementEventsRequest(vin=VIN)
        )
        events: list[pb.EntitlementEvent] = []
        while not events or events[-1].entitlement_id != sentinel.entitlement_id:
            events.append(await asyncio.wait_for(call.read(), 20))
        call.cancel()
        return events[:-1]


def metric(gw: RunningGateway, line_start: str) -> float:
    for line in gw.http("/metrics")[1].splitlines():
        if line.startswith(line_start):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


async def killed(gw: RunningGateway, point: str) -> None:
    """The process died by its own SIGKILL at `point` (and not otherwise)."""
    await asyncio.to_thread(gw.proc.wait, 30)
    code, out = gw.stop()
    assert code == -signal.SIGKILL and f"SIGKILL at {point}" in out, out


async def test_grant_acknowledged_before_a_crash_is_delivered_after_the_restart(
    tmp_path: Path, broker: ManagedBroker
) -> None:
    first = start(tmp_path, broker)
    await set_owner(first.grpc_port)
    e = await grant(first.grpc_port, order("crash-1", "remote-services", pb.ENTITLEMENT_KIND_SERVICE))
    first.stop(signal.SIGKILL)  # acknowledged over gRPC (committed), not yet delivered
    second = start(tmp_path, broker)
    try:
        car = TestVehicle(VIN, broker.port)
        await car.connect(boot=True)
        await car.listen()
        down = await asyncio.wait_for(car.downlinks.get(), 10)
        assert [i.entitlement_id for i in down.entitlement_set.items] == [e.entitlement_id]
        # DELIVERED is committed just after the publish: wait for it before the sentinel's grant.
        await eventually(lambda: state(second.grpc_port, e.entitlement_id),
                         lambda s: s == pb.ENTITLEMENT_STATE_DELIVERED)
        kinds = [ev.kind for ev in await events_through_sentinel(second.grpc_port)]
        assert kinds == [pb.ENTITLEMENT_EVENT_KIND_GRANTED, pb.ENTITLEMENT_EVENT_KIND_DELIVERED]
        await car.close()
    finally:
        second.stop()


@pytest.mark.parametrize("point", ["before_ack", "after_entitlements"])
async def test_crash_around_the_unlock_result_bills_exactly_once(
    tmp_path: Path, broker: ManagedBroker, point: str
) -> None:
    # The car's hello is item 1 and its FoD result item 2 at either point: the process dies with
    # the result committed (the ledger, and at before_ack the session too) but not acknowledged.
    first = start(tmp_path, broker, kill=f"{point}:2")
    await set_owner(first.grpc_port)
    car = TestVehicle(VIN, broker.port, bearer=common_pb2.BEARER_EMBEDDED_SIM)
    await car.connect(power=common_pb2.POWER_STATE_OFF, lock=common_pb2.LOCK_STATE_LOCKED,
                      plug=common_pb2.CHARGING_PLUG_DISCONNECTED)
    await car.listen()
    e = await grant(first.grpc_port, order("crash-fod", "sport-chrono", pb.ENTITLEMENT_KIND_FOD_UNLIMITED))
    cmd = (await asyncio.wait_for(car.downlinks.get(), 15)).fod_command
    result = car.envelope()
    result.fod_result.command_id = cmd.command_id
    result.fod_result.entitlement_id = e.entitlement_id
    result.fod_result.action = uplink_pb2.FOD_ACTION_UNLOCK
    result.fod_result.success = True
    await car.publish(result)  # the broker has it (QoS 1) ...
    await killed(first, point)  # ... and the gateway died between its commit and its PUBACK
    second = start(tmp_path, broker)
    try:
        await car.publish(result.SerializeToString())  # the car repeats its result, too
        # The pipeline applies messages in the broker's order and counts a batch only after it
        # is done: once this later change is counted, the redelivered and repeated results are
        # through the engine as well.
        await car.state(lock=common_pb2.LOCK_STATE_UNLOCKED)
        await eventually(
            lambda: asyncio.to_thread(metric, second, 'gateway_messages_received_total{kind="state_change"}'),
            lambda n: n >= 1,
        )
        redelivered = metric(second, 'gateway_messages_received_total{kind="fod_result"}')
        duplicates = metric(second, 'gateway_messages_stale_total{outcome="duplicate"}')
        events = await events_through_sentinel(second.grpc_port)
        await car.close()
    finally:
        second.stop()
    kinds = [ev.kind for ev in events]
    assert kinds.count(pb.ENTITLEMENT_EVENT_KIND_BILLABLE) == 1, kinds  # R14: billed once
    assert kinds.count(pb.ENTITLEMENT_EVENT_KIND_UNLOCKED) == 1, kinds
    assert kinds[0] == pb.ENTITLEMENT_EVENT_KIND_GRANTED
    if point == "after_entitlements":
        # The session store had not recorded the result: its redelivery reached the engine
        # again (idempotent there), and only the car's own repeat was a duplicate.
        assert (redelivered, duplicates) == (1, 1)
    else:
        # The session store had it: both the redelivery and the repeat were dropped as duplicates.
        assert (redelivered, duplicates) == (0, 2)
