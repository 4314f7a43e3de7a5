"""Two gateways on one PostgreSQL database (store_url), each with its own managed broker, data_dir
and ports; the car talks to gateway A. A backend talking to gateway B sees what A ingested:
GetVehicle and ListVehicles read the store, and B's Watch streams are woken by the NOTIFY of
A's commits (gateway/store/pg_notify.py), also after B's LISTEN connection was killed."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import grpc
import pytest
from support import eventually, free_port, gateway_channel, gateway_config
from test_entitlements_grpc import OWNER, grant
from test_walking_skeleton import get_vehicle, take
from vehicle_client import TestVehicle

from gateway._gen.telematics.v1 import (
    common_pb2,
    entitlements_pb2,
    entitlements_pb2_grpc,
    explain_pb2,
    explain_pb2_grpc,
    vehicles_pb2,
    vehicles_pb2_grpc,
)
from gateway.app import Gateway
from gateway.convert import account_linking_to_proto, vehicle_to_api
from gateway.rules import linking_facts
from gateway.store import pg_notify

pytestmark = pytest.mark.integration

VIN = "WP0ZZZ99ZJS100021"


@dataclass
class Instance:
    gw: Gateway
    channel: grpc.aio.Channel

    @property
    def vehicles(self) -> vehicles_pb2_grpc.VehicleServiceStub:
        return vehicles_pb2_grpc.VehicleServiceStub(self.channel)

    @property
    def entitlements(self) -> entitlements_pb2_grpc.EntitlementServiceStub:
        return entitlements_pb2_grpc.EntitlementServiceStub(self.channel)

    @property
    def explain(self) -> explain_pb2_grpc.ExplainServiceStub:
        return explain_pb2_grpc.ExplainServiceStub(self.channel)


@pytest.fixture
async def fleet(tmp_path: Path, pg_url: str) -> AsyncIterator[tuple[Instance, Instance]]:
    """Gateways A and B sharing the test's PostgreSQL database."""
    gateways = [Gateway(gateway_config(tmp_path / name, free_port(), store_url=pg_url)) for name in "ab"]
    started: list[Gateway] = []
    try:
        for gw in gateways:
            await gw.start()
            started.append(gw)
        async with gateway_channel(gateways[0]) as a, gateway_channel(gateways[1]) as b:
            yield Instance(gateways[0], a), Instance(gateways[1], b)
    finally:
        for gw in reversed(started):
            await gw.stop()


def expected_answer(gw: Gateway, vin: str) -> vehicles_pb2.Vehicle:
    """What a gateway answers from its own memory for a car it serves (the SQLite behaviour)."""
    session = gw.tracker.get(vin)
    assert session is not None and gw.reference is not None
    vehicle = vehicle_to_api(session)
    vehicle.account_linking.CopyFrom(account_linking_to_proto(linking_facts(gw.reference.current, session)))
    return vehicle


def sample(gw: Gateway, name: str) -> float:
    return gw.metrics.registry.get_sample_value(name) or 0.0


async def take_events(
    stream: AsyncIterator[entitlements_pb2.EntitlementEvent], n: int
) -> list[entitlements_pb2.EntitlementEvent]:
    out = []
    async for event in stream:
        out.append(event)
        if len(out) == n:
            break
    return out


def has(check: Callable[[vehicles_pb2.Vehicle], bool]) -> Callable[[vehicles_pb2.Vehicle | None], bool]:
    return lambda v: v is not None and check(v)


async def test_a_car_ingested_by_one_gateway_is_answered_by_another(fleet: tuple[Instance, Instance]) -> None:
    a, b = fleet
    car = TestVehicle(VIN, a.gw.config.mqtt_port)
    await car.connect()
    try:
        await car.state(lock=common_pb2.LOCK_STATE_LOCKED)
        found = await eventually(lambda: get_vehicle(b.vehicles, VIN),
                                 has(lambda v: v.state.lock == common_pb2.LOCK_STATE_LOCKED))
        assert found is not None and found.presence == vehicles_pb2.PRESENCE_ONLINE
        assert VIN not in b.gw.tracker.sessions  # B never saw the car: the answer came from the store
        assert found == expected_answer(a.gw, VIN)
        page = await b.vehicles.ListVehicles(vehicles_pb2.ListVehiclesRequest(page_size=10))
        assert list(page.vehicles) == [found] and page.next_page_token == ""
    finally:
        await car.close()


async def test_list_vehicles_on_another_gateway_pages_in_vin_order(fleet: tuple[Instance, Instance]) -> None:
    a, b = fleet
    vins = [f"WP0ZZZ99ZJS1000{n}" for n in (33, 31, 32)]
    cars = [TestVehicle(vin, a.gw.config.mqtt_port) for vin in vins]
    for car in cars:
        await car.connect()
    try:
        await eventually(lambda: get_vehicle(b.vehicles, vins[-1]), has(lambda v: True))
        await eventually(lambda: get_vehicle(b.vehicles, vins[0]), has(lambda v: True))
        first = await b.vehicles.ListVehicles(vehicles_pb2.ListVehiclesRequest(page_size=2))
        rest = await b.vehicles.ListVehicles(
            vehicles_pb2.ListVehiclesRequest(page_size=2, page_token=first.next_page_token)
        )
        assert [v.vin for v in first.vehicles] == sorted(vins)[:2]
        assert [v.vin for v in rest.vehicles] == sorted(vins)[2:] and rest.next_page_token == ""
    finally:
        for car in cars:
            await car.close()


async def test_a_location_privacy_covers_is_withheld_when_read_from_the_store(
    fleet: tuple[Instance, Instance],
) -> None:
    a, b = fleet
    car = TestVehicle(VIN, a.gw.config.mqtt_port, visited_country="AT", roaming=True)
    car.privacy = common_pb2.Privacy(mode=common_pb2.PRIVACY_MODE_ALL_SERVICES)  # R22
    await car.connect()
    try:
        found = await eventually(lambda: get_vehicle(b.vehicles, VIN), has(lambda v: v.roaming))
        assert found is not None and (found.visited_country, found.visited_mcc) == ("", 0)
        page = await b.vehicles.ListVehicles(vehicles_pb2.ListVehiclesRequest(page_size=10))
        assert [v.visited_country for v in page.vehicles] == [""]
        stored = await b.gw.store.get_vehicle(VIN)  # the store keeps it (the roaming rules need it)
        assert stored is not None and stored.visited_country == "AT"
    finally:
        await car.close()


async def test_a_watch_stream_on_another_gateway_is_woken_by_the_commit(
    fleet: tuple[Instance, Instance],
) -> None:
    a, b = fleet
    car = TestVehicle(VIN, a.gw.config.mqtt_port)
    await car.connect()
    try:
        await eventually(lambda: get_vehicle(b.vehicles, VIN), has(lambda v: True))
        stream = b.vehicles.WatchVehicleEvents(vehicles_pb2.WatchVehicleEventsRequest(vin=VIN))
        # Read before it arrived, the online event proves B's stream has read the store and now
        # waits: only a wake-up of B's hub makes it read the next event.
        [online] = await asyncio.wait_for(take(stream, 1), 10)
        assert online.WhichOneof("kind") == "online"
        await car.state(lock=common_pb2.LOCK_STATE_LOCKED)
        [changed] = await asyncio.wait_for(take(stream, 1), 10)
        stream.cancel()
        assert changed.WhichOneof("kind") == "state_changed" and "state.lock" in changed.state_changed.changed
        assert changed.cursor > online.cursor
    finally:
        await car.close()


async def test_an_entitlement_watch_on_another_gateway_gets_a_grant_made_on_the_first(
    fleet: tuple[Instance, Instance],
) -> None:
    a, b = fleet
    await a.entitlements.SetVehicleOwner(entitlements_pb2.SetVehicleOwnerRequest(vin=VIN, owner=OWNER))
    first = await a.entitlements.Grant(grant("order-1", vin=VIN))
    stream = b.entitlements.WatchEntitlementEvents(entitlements_pb2.WatchEntitlementEventsRequest(vin=VIN))
    written = await b.gw.ledger.read_events(0, 100, VIN)
    assert written
    # Every event so far (read by B's stream from the store): B's stream now waits.
    before = await asyncio.wait_for(take_events(stream, len(written)), 10)
    assert {e.entitlement_id for e in before} == {first.entitlement_id}
    second = await a.entitlements.Grant(grant("order-2", vin=VIN, product_id="navigation-plus"))
    [event] = await asyncio.wait_for(take_events(stream, 1), 10)
    stream.cancel()
    assert event.entitlement_id == second.entitlement_id and event.cursor > before[-1].cursor


async def test_a_killed_listen_connection_is_reconnected_and_an_event_committed_meanwhile_arrives(
    fleet: tuple[Instance, Instance], pg_url: str
) -> None:
    a, b = fleet
    listener = b.gw.outbox_listener
    assert listener is not None
    gate = asyncio.Event()  # B reconnects only once A has committed the event

    async def gated(url: str) -> asyncpg.Connection:
        await gate.wait()
        return await pg_notify.connect(url)

    listener.connect = gated
    car = TestVehicle(VIN, a.gw.config.mqtt_port)
    await car.connect()
    try:
        await eventually(lambda: get_vehicle(b.vehicles, VIN), has(lambda v: True))
        stream = b.vehicles.WatchVehicleEvents(vehicles_pb2.WatchVehicleEventsRequest(vin=VIN))
        [online] = await asyncio.wait_for(take(stream, 1), 10)
        admin = await asyncpg.connect(pg_url)
        try:
            assert await admin.fetchval("SELECT pg_terminate_backend($1)", listener.backend_pid)
        finally:
            await admin.close()
        await eventually(lambda: asyncio.sleep(0, sample(b.gw, "gateway_store_notify_connected")),
                         lambda v: v == 0)
        await car.state(lock=common_pb2.LOCK_STATE_LOCKED)
        await eventually(lambda: get_vehicle(b.vehicles, VIN),  # committed by A, no one of B listening
                         has(lambda v: v.state.lock == common_pb2.LOCK_STATE_LOCKED))
        gate.set()
        [changed] = await asyncio.wait_for(take(stream, 1), 10)
        stream.cancel()
        assert changed.WhichOneof("kind") == "state_changed" and changed.cursor > online.cursor
        # Counted once the new connection is set up, which wakes the stream first.
        await eventually(lambda: asyncio.sleep(0, sample(b.gw, "gateway_store_notify_reconnects_total")),
                         lambda n: n == 1)
    finally:
        await car.close()


async def test_a_remote_command_on_another_gateway_judges_the_car_as_stored(
    fleet: tuple[Instance, Instance],
) -> None:
    """B never saw the car: SendRemoteCommand reads it from the store, as GetVehicle does, so
    the answer does not depend on which gateway is asked (here: R22 privacy refuses it)."""
    a, b = fleet
    car = TestVehicle(VIN, a.gw.config.mqtt_port)
    car.privacy = common_pb2.Privacy(mode=common_pb2.PRIVACY_MODE_ALL_SERVICES)
    await car.connect()
    try:
        await eventually(lambda: get_vehicle(b.vehicles, VIN), has(lambda v: True))
        request = vehicles_pb2.SendRemoteCommandRequest(vin=VIN, name="flash_lights")
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await b.vehicles.SendRemoteCommand(request)
        assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "R22" in (refused.value.details() or "")
        assert VIN not in b.gw.tracker.sessions
    finally:
        await car.close()


async def test_explain_on_another_gateway_explains_the_car_as_stored(
    fleet: tuple[Instance, Instance],
) -> None:
    a, b = fleet
    await a.entitlements.SetVehicleOwner(entitlements_pb2.SetVehicleOwnerRequest(vin=VIN, owner=OWNER))
    granted = await a.entitlements.Grant(grant("order-1", vin=VIN))
    car = TestVehicle(VIN, a.gw.config.mqtt_port, visited_country="AT", roaming=True)
    await car.connect(boot=False)
    try:
        await eventually(lambda: get_vehicle(b.vehicles, VIN), has(lambda v: v.roaming))
        answer = await b.explain.Explain(explain_pb2.ExplainRequest(vin=VIN))
        assert answer.vin == VIN and answer.visited_country == "AT"
        assert answer.decisions  # the rules were judged on the stored session
        assert VIN not in b.gw.tracker.sessions
        # The same entitlements explained as on A, which the car talks to.
        on_a = await a.explain.Explain(explain_pb2.ExplainRequest(vin=VIN))
        assert [e.entitlement_id for e in answer.entitlements] == [granted.entitlement_id]
        assert list(answer.entitlements) == list(on_a.entitlements)
        assert list(answer.decisions) == list(on_a.decisions)
    finally:
        await car.close()
