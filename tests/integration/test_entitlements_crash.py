"""Nothing lost, nothing billed twice: SIGKILL the gateway around entitlement milestones."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import grpc
import pytest
from support import eventually
from test_cli_run import RunningGateway
from vehicle_client import TestVehicle

from gateway._gen.telematics.v1 import common_pb2, uplink_pb2
from gateway._gen.telematics.v1 import entitlements_pb2 as pb
from gateway._gen.telematics.v1 import entitlements_pb2_grpc as pb_grpc
from gateway.broker.managed import ManagedBroker

pytestmark = pytest.mark.integration

VIN = "WP0ZZZ99ZJS700001"
OWNER = "owner@example.com"


def start(tmp_path: Path, broker: ManagedBroker) -> RunningGateway:
    assert broker.credentials is not None
    c = broker.credentials
    gw = RunningGateway(
        tmp_path,
        "--mqtt-url", f"mqtt://{c.username}:{c.password}@127.0.0.1:{broker.port}",
        env={"GATEWAY_FOD_IDLE_S": "1"},
    )
    gw.wait_ready()
    return gw


async def all_events(port: int) -> list[pb.EntitlementEvent]:
    """Every event from cursor 0, the way a backend resuming from scratch reads them."""
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
        call = pb_grpc.EntitlementServiceStub(ch).WatchEntitlementEvents(
            pb.WatchEntitlementEventsRequest(vin=VIN)
        )
        events = []
        while True:
            try:
                events.append(await asyncio.wait_for(call.read(), 1.0))
            except TimeoutError:
                break
        call.cancel()
        return events


async def rpc(port: int, method: str, request: object) -> object:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
        return await getattr(pb_grpc.EntitlementServiceStub(ch), method)(request)


async def test_grant_acknowledged_before_a_crash_is_delivered_after_the_restart(
    tmp_path: Path, broker: ManagedBroker
) -> None:
    first = start(tmp_path, broker)
    await rpc(first.grpc_port, "SetVehicleOwner", pb.SetVehicleOwnerRequest(vin=VIN, owner=OWNER))
    e = await rpc(first.grpc_port, "Grant", pb.GrantRequest(
        order_id="crash-1", vin=VIN, product_id="remote-services", kind=pb.ENTITLEMENT_KIND_SERVICE,
        purchaser=OWNER, purchaser_role=pb.PURCHASER_ROLE_OWNER))
    first.stop(signal.SIGKILL)  # acknowledged over gRPC, not yet delivered
    second = start(tmp_path, broker)
    try:
        car = TestVehicle(VIN, broker.port)
        await car.connect(boot=True)
        await car.listen()
        down = await asyncio.wait_for(car.downlinks.get(), 10)
        assert [i.entitlement_id for i in down.entitlement_set.items] == [e.entitlement_id]  # type: ignore[attr-defined]
        kinds = [ev.kind for ev in await all_events(second.grpc_port)]
        assert kinds == [pb.ENTITLEMENT_EVENT_KIND_GRANTED, pb.ENTITLEMENT_EVENT_KIND_DELIVERED]
        await car.close()
    finally:
        second.stop()


async def test_crash_around_the_unlock_result_bills_exactly_once(
    tmp_path: Path, broker: ManagedBroker
) -> None:
    first = start(tmp_path, broker)
    await rpc(first.grpc_port, "SetVehicleOwner", pb.SetVehicleOwnerRequest(vin=VIN, owner=OWNER))
    car = TestVehicle(VIN, broker.port, bearer=common_pb2.BEARER_EMBEDDED_SIM)
    await car.connect(power=common_pb2.POWER_STATE_OFF, lock=common_pb2.LOCK_STATE_LOCKED,
                      plug=common_pb2.CHARGING_PLUG_DISCONNECTED)
    await car.listen()
    e = await rpc(first.grpc_port, "Grant", pb.GrantRequest(
        order_id="crash-fod", vin=VIN, product_id="sport-chrono", kind=pb.ENTITLEMENT_KIND_FOD_UNLIMITED,
        purchaser=OWNER, purchaser_role=pb.PURCHASER_ROLE_OWNER))
    cmd = (await asyncio.wait_for(car.downlinks.get(), 15)).fod_command
    result = car.envelope()
    result.fod_result.command_id = cmd.command_id
    result.fod_result.entitlement_id = e.entitlement_id  # type: ignore[attr-defined]
    result.fod_result.action = uplink_pb2.FOD_ACTION_UNLOCK
    result.fod_result.success = True
    await car.publish(result)  # the broker has it (QoS 1) ...
    first.stop(signal.SIGKILL)  # ... and the gateway dies around its processing
    second = start(tmp_path, broker)
    try:
        await car.publish(result.SerializeToString())  # the car repeats its result, too

        async def billable() -> int:
            events = await all_events(second.grpc_port)
            return sum(ev.kind == pb.ENTITLEMENT_EVENT_KIND_BILLABLE for ev in events)

        await eventually(billable, lambda n: n >= 1, timeout=15)
        kinds = [ev.kind for ev in await all_events(second.grpc_port)]
        assert kinds.count(pb.ENTITLEMENT_EVENT_KIND_BILLABLE) == 1, kinds
        assert kinds[0] == pb.ENTITLEMENT_EVENT_KIND_GRANTED and pb.ENTITLEMENT_EVENT_KIND_UNLOCKED in kinds
        await car.close()
    finally:
        second.stop()
