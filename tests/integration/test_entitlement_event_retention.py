"""The entitlement outbox follows the vehicle event log's retention and resumption rules: the
gateway's pruning keeps the newest `entitlement_event_retention` events, and
WatchEntitlementEvents answers OUT_OF_RANGE (saying how to resume) for a pruned cursor while a
retained one resumes without gaps. Real gateway, gRPC, SQLite and Mosquitto."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from support import free_port, gateway_channel

from gateway._gen.telematics.v1 import entitlements_pb2 as pb
from gateway._gen.telematics.v1 import entitlements_pb2_grpc
from gateway.app import Gateway
from gateway.config import load_config

pytestmark = pytest.mark.integration

VIN = "WP0ZZZ99ZTS392124"
OWNER = "owner@example.com"
RETAINED = 3


@pytest.fixture
async def gateway(tmp_path: Path) -> AsyncIterator[Gateway]:
    config = load_config(
        env={},
        data_dir=str(tmp_path / "data"),
        mqtt_port=free_port(), mqtt_tls_port=free_port(),
        grpc_listen="127.0.0.1:0",
        http_listen="127.0.0.1:0",
        entitlement_event_retention=RETAINED,
    )
    gw = Gateway(config)
    await gw.start()
    try:
        yield gw
    finally:
        await gw.stop()


async def cursors(call: AsyncIterator[pb.EntitlementEvent], n: int) -> list[int]:
    return [(await asyncio.wait_for(anext(call), 10)).cursor for _ in range(n)]


async def test_a_pruned_entitlement_cursor_is_out_of_range_and_a_retained_one_resumes(
    gateway: Gateway,
) -> None:
    async with gateway_channel(gateway) as channel:
        stub = entitlements_pb2_grpc.EntitlementServiceStub(channel)
        await stub.SetVehicleOwner(pb.SetVehicleOwnerRequest(vin=VIN, owner=OWNER))
        for i in range(6):  # one GRANTED event each: cursors 1..6
            await stub.Grant(
                pb.GrantRequest(
                    order_id=f"order-{i}",
                    vin=VIN,
                    product_id="remote-services",
                    kind=pb.ENTITLEMENT_KIND_SERVICE,
                    purchaser=OWNER,
                    purchaser_role=pb.PURCHASER_ROLE_OWNER,
                )
            )
        assert await gateway.prune_once() == (0, 6 - RETAINED)

        pruned = stub.WatchEntitlementEvents(pb.WatchEntitlementEventsRequest(after_cursor=2))
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await anext(aiter(pruned))
        assert err.value.code() is grpc.StatusCode.OUT_OF_RANGE
        details = err.value.details() or ""
        assert "after_cursor 2 was pruned" in details and "oldest retained event is 4" in details
        assert "after_cursor 0 (or 3)" in details  # how to resume

        for after in (3, 0):  # the last pruned cursor's successor is retained; 0: the oldest
            call = stub.WatchEntitlementEvents(pb.WatchEntitlementEventsRequest(after_cursor=after))
            assert await cursors(aiter(call), RETAINED) == [4, 5, 6]
            call.cancel()
        resumed = stub.WatchEntitlementEvents(pb.WatchEntitlementEventsRequest(after_cursor=5))
        assert await cursors(aiter(resumed), 1) == [6]
        resumed.cancel()

