"""The entitlement lifecycle end to end: a real broker, a test car answering downlinks, a real
gRPC client, and the gateway's clock moved by the test (no sleeping through 10 minutes)."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from support import eventually, gateway_channel
from vehicle_client import TestVehicle

from gateway import topics
from gateway._gen.telematics.v1 import common_pb2, downlink_pb2, explain_pb2, explain_pb2_grpc, uplink_pb2
from gateway._gen.telematics.v1 import entitlements_pb2 as pb
from gateway._gen.telematics.v1 import entitlements_pb2_grpc as pb_grpc
from gateway.app import Gateway
from gateway.clock import ManualClock

pytestmark = pytest.mark.integration

VIN = "WP0ZZZ99ZJS600001"
OWNER = "owner@example.com"
OFF_LOCKED_UNPLUGGED = {
    "power": common_pb2.POWER_STATE_OFF,
    "lock": common_pb2.LOCK_STATE_LOCKED,
    "plug": common_pb2.CHARGING_PLUG_DISCONNECTED,
}


async def stub_for(gw: Gateway) -> tuple[grpc.aio.Channel, pb_grpc.EntitlementServiceStub]:
    ch = gateway_channel(gw)
    return ch, pb_grpc.EntitlementServiceStub(ch)


async def state_of(stub: pb_grpc.EntitlementServiceStub, eid: str) -> int:
    return int((await stub.GetEntitlement(pb.GetEntitlementRequest(entitlement_id=eid))).state)


async def watch_kinds(
    stub: pb_grpc.EntitlementServiceStub, n: int, after: int = 0
) -> list[pb.EntitlementEvent]:
    call = stub.WatchEntitlementEvents(pb.WatchEntitlementEventsRequest(vin=VIN, after_cursor=after))
    events = [await asyncio.wait_for(call.read(), 10) for _ in range(n)]
    call.cancel()
    return events


async def engine_settled(gw: Gateway, car: TestVehicle) -> None:
    """The gateway has handled everything the car sent and all work due at the clock's now.

    The pipeline hands each batch to the engine (on_vehicle_batch) before it counts the batch as
    processed. The car is the only publisher in these tests and every envelope it built was sent,
    so `processed >= car.sequence` means all of them went through. `tick()` then does the
    time-driven work due now (R10, R13, R17, R18); it first waits for a tick the run loop may have
    started, and every downlink of a tick is published before the tick returns.
    """
    pipeline, engine = gw.pipeline, gw.entitlements
    assert pipeline is not None and engine is not None
    await eventually(lambda: asyncio.sleep(0, pipeline.processed), lambda n: n >= car.sequence)
    await engine.tick()


async def no_downlink(gw: Gateway, car: TestVehicle) -> None:
    """Nothing was sent to the car, proven without waiting out a timeout: after the engine has
    settled, a sentinel goes out on the gateway's own MQTT connection, the one its downlinks use.
    The broker keeps the order of one publisher's QoS 1 messages on a topic, so a downlink sent
    before the sentinel would reach the car first."""
    await engine_settled(gw, car)
    sentinel = downlink_pb2.Downlink(vin=car.vin)  # no body: unlike any downlink the engine sends
    await gw.publish_downlink(topics.downlink(car.vin), sentinel.SerializeToString())
    got = await asyncio.wait_for(car.downlinks.get(), 10)
    assert got.WhichOneof("body") is None, f"unexpected downlink: {got}"


def grant(order: str, product: str, kind: pb.EntitlementKind.ValueType) -> pb.GrantRequest:
    return pb.GrantRequest(order_id=order, vin=VIN, product_id=product, kind=kind,
                           purchaser=OWNER, purchaser_role=pb.PURCHASER_ROLE_OWNER)


async def test_service_waits_for_a_boot_while_online_then_is_delivered_and_active_after_the_ack(
    clocked_gateway: tuple[Gateway, ManualClock],
) -> None:
    gw, _clock = clocked_gateway
    ch, stub = await stub_for(gw)
    await stub.SetVehicleOwner(pb.SetVehicleOwnerRequest(vin=VIN, owner=OWNER))
    e = await stub.Grant(grant("order-svc-1", "remote-services", pb.ENTITLEMENT_KIND_SERVICE))  # car is off
    assert e.state == pb.ENTITLEMENT_STATE_PENDING

    car = TestVehicle(VIN, gw.config.mqtt_port)
    await car.connect(boot=False)  # online, but no restart yet (R13)
    await car.listen()
    await no_downlink(gw, car)
    explained = await explain_pb2_grpc.ExplainServiceStub(ch).Explain(explain_pb2.ExplainRequest(vin=VIN))
    assert [b.code for b in explained.entitlements[0].blockers] == ["restart_required"]
    await car.close()

    await car.connect(boot=True)  # the head unit restarted while online
    await car.listen()
    down: downlink_pb2.Downlink = await asyncio.wait_for(car.downlinks.get(), 10)
    assert [i.entitlement_id for i in down.entitlement_set.items] == [e.entitlement_id]
    await eventually(lambda: state_of(stub, e.entitlement_id), lambda s: s == pb.ENTITLEMENT_STATE_DELIVERED)
    ack = car.envelope()
    ack.entitlement_ack.set_version = down.entitlement_set.version
    ack.entitlement_ack.entitlement_ids.append(e.entitlement_id)
    await car.publish(ack)
    await eventually(lambda: state_of(stub, e.entitlement_id), lambda s: s == pb.ENTITLEMENT_STATE_ACTIVE)
    kinds = [ev.kind for ev in await watch_kinds(stub, 3)]
    assert kinds == [pb.ENTITLEMENT_EVENT_KIND_GRANTED, pb.ENTITLEMENT_EVENT_KIND_DELIVERED,
                     pb.ENTITLEMENT_EVENT_KIND_ACTIVE]
    await car.close()
    await ch.close()


async def test_fod_unlocks_only_after_ten_idle_minutes_off_locked_unplugged_and_bills_once(
    clocked_gateway: tuple[Gateway, ManualClock],
) -> None:
    gw, clock = clocked_gateway
    ch, stub = await stub_for(gw)
    await stub.SetVehicleOwner(pb.SetVehicleOwnerRequest(vin=VIN, owner=OWNER))
    car = TestVehicle(VIN, gw.config.mqtt_port, bearer=common_pb2.BEARER_EMBEDDED_SIM)
    # The test moves the clock by an hour without a message: the car announces heartbeats
    # that rare, so liveness keeps it online (a real parked car would send heartbeats).
    car.heartbeat_interval_s = 3600
    await car.connect(power=common_pb2.POWER_STATE_OFF, lock=common_pb2.LOCK_STATE_LOCKED,
                      plug=common_pb2.CHARGING_PLUG_CONNECTED)  # charging (R17 blocks)
    await car.listen()
    e = await stub.Grant(grant("order-fod-1", "sport-chrono", pb.ENTITLEMENT_KIND_FOD_UNLIMITED))
    await engine_settled(gw, car)  # the engine knows the car is charging
    clock.advance(3600)
    await no_downlink(gw, car)  # an hour plugged in: nothing

    await car.state(charging_plug=common_pb2.CHARGING_PLUG_DISCONNECTED)
    await engine_settled(gw, car)  # the R17 wait starts at this time
    clock.advance(300)
    car.privacy = common_pb2.Privacy(mode=common_pb2.PRIVACY_MODE_ALL_SERVICES)  # privacy on mid-wait
    await car.state(lock=common_pb2.LOCK_STATE_LOCKED)
    car.privacy = common_pb2.Privacy(mode=common_pb2.PRIVACY_MODE_OFF)
    await car.state(lock=common_pb2.LOCK_STATE_LOCKED)
    await engine_settled(gw, car)  # the R17 wait restarts at this time
    clock.advance(400)  # 700 s since unplugging, but only 400 s since privacy went off
    await no_downlink(gw, car)
    clock.advance(201)  # 601 s since the wait restarted
    await engine_settled(gw, car)
    down = await asyncio.wait_for(car.downlinks.get(), 10)
    cmd = down.fod_command
    assert cmd.action == uplink_pb2.FOD_ACTION_UNLOCK and cmd.entitlement_id == e.entitlement_id

    for _ in range(2):  # the car's success, and a duplicate of it (QoS 1 redelivery)
        result = car.envelope()
        result.fod_result.command_id = cmd.command_id
        result.fod_result.entitlement_id = e.entitlement_id
        result.fod_result.action = uplink_pb2.FOD_ACTION_UNLOCK
        result.fod_result.success = True
        await car.publish(result)
    await eventually(lambda: state_of(stub, e.entitlement_id), lambda s: s == pb.ENTITLEMENT_STATE_UNLOCKED)
    events = await watch_kinds(stub, 3)
    assert [ev.kind for ev in events] == [
        pb.ENTITLEMENT_EVENT_KIND_GRANTED,
        pb.ENTITLEMENT_EVENT_KIND_UNLOCKED,
        pb.ENTITLEMENT_EVENT_KIND_BILLABLE,
    ]
    # Both results have been through the engine (it runs before the pipeline counts them), so
    # the log the Watch stream replays is complete here: no second billable event (R14).
    await engine_settled(gw, car)
    assert await gw.ledger.read_events(events[-1].cursor, 10, VIN) == []
    await car.close()
    await ch.close()


async def test_the_same_grant_sent_100_times_concurrently_creates_one_entitlement(
    clocked_gateway: tuple[Gateway, ManualClock],
) -> None:
    gw, _ = clocked_gateway
    ch, stub = await stub_for(gw)
    await stub.SetVehicleOwner(pb.SetVehicleOwnerRequest(vin=VIN, owner=OWNER))
    request = grant("order-dup", "remote-services", pb.ENTITLEMENT_KIND_SERVICE)
    request.booked_at.FromSeconds(1_767_225_600)
    answers = await asyncio.gather(*(stub.Grant(request) for _ in range(100)))
    assert len({a.entitlement_id for a in answers}) == 1
    listed = await stub.ListEntitlements(pb.ListEntitlementsRequest(vin=VIN, include_ended=True))
    assert len(listed.entitlements) == 1
    other = grant("order-dup", "navigation-plus", pb.ENTITLEMENT_KIND_SERVICE)
    with pytest.raises(grpc.aio.AioRpcError) as conflict:
        await stub.Grant(other)
    assert conflict.value.code() is grpc.StatusCode.ALREADY_EXISTS
    secondary = grant("order-2nd", "remote-services", pb.ENTITLEMENT_KIND_SERVICE)
    secondary.purchaser_role = pb.PURCHASER_ROLE_SECONDARY_USER
    with pytest.raises(grpc.aio.AioRpcError) as denied:
        await stub.Grant(secondary)
    assert denied.value.code() is grpc.StatusCode.PERMISSION_DENIED  # R3
    await ch.close()
