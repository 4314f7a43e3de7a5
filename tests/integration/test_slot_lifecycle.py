"""The lifecycle of ingest slots inside a gateway (gateway/ingress/slot_ingress.py, gateway/app.py):
a clean stop hands the leases back at once, and a slot's session supervisor that crashes ends
the gateway with an error naming the slot instead of going unnoticed. Real Mosquitto (started
by the test), real PostgreSQL."""

from __future__ import annotations

import asyncio
from pathlib import Path

import asyncpg
import pytest
from support import eventually, gateway_channel
from test_ingest_slots import fleet_config, slots_of
from test_walking_skeleton import get_vehicle
from vehicle_client import TestVehicle

from gateway._gen.telematics.v1 import vehicles_pb2, vehicles_pb2_grpc
from gateway.app import Gateway
from gateway.broker.managed import ManagedBroker
from gateway.ingress.mqtt5 import Mqtt5Client
from gateway.ingress.slot_ingress import SlotIngress, SlotSupervisorError

pytestmark = pytest.mark.integration

# Long leases: a lease that was not released is still held when the test looks.
LONG_LEASE_S = 120.0


async def leased_to(pg_url: str, holder: str) -> int:
    """Slots whose lease `holder` still holds by the database's clock."""
    conn = await asyncpg.connect(pg_url)
    try:
        return int(await conn.fetchval(
            "SELECT count(*) FROM ingest_slots WHERE holder = $1 AND expires_at > clock_timestamp()",
            holder,
        ))
    finally:
        await conn.close()


async def test_a_clean_stop_releases_the_leases_even_with_no_shutdown_grace(
    tmp_path: Path, broker: ManagedBroker, pg_url: str
) -> None:
    """shutdown_grace_s bounds the drain and the disconnects; the lease release runs after them
    and is not cut short by it, so another gateway can claim the slots at once."""
    gw = Gateway(fleet_config(tmp_path / "gw", broker, pg_url, mqtt_slot_lease_s=LONG_LEASE_S,
                              shutdown_grace_s=0))
    await gw.start()
    holder = slots_of(gw).holder
    try:
        assert await leased_to(pg_url, holder) == 2
    finally:
        await gw.stop()
    assert await leased_to(pg_url, holder) == 0
    conn = await asyncpg.connect(pg_url)
    try:  # it left the members too: the others' fair share counts it no more
        assert await conn.fetchval("SELECT count(*) FROM ingest_members WHERE holder = $1", holder) == 0
    finally:
        await conn.close()


async def test_the_other_gateway_takes_over_the_slots_of_one_that_stopped_cleanly(
    tmp_path: Path, broker: ManagedBroker, pg_url: str
) -> None:
    """With leases far longer than the test, only a release lets the survivor claim them."""
    a = Gateway(fleet_config(tmp_path / "a", broker, pg_url, mqtt_slot_lease_s=LONG_LEASE_S,
                             shutdown_grace_s=0))
    # The survivor renews (and claims) every second; its lease length does not matter here.
    b = Gateway(fleet_config(tmp_path / "b", broker, pg_url, mqtt_slot_lease_s=3.0))
    await a.start()
    try:
        await b.start()
        try:
            # a renews (and hands back its surplus) only every 40 s: b stands by meanwhile.
            assert slots_of(b).held == frozenset() and len(slots_of(a).held) == 2
            await a.stop()
            await eventually(lambda: asyncio.sleep(0, (len(slots_of(b).held), slots_of(b).connected)),
                             lambda state: state == (2, True), timeout=20)
        finally:
            await b.stop()
    finally:
        await a.stop()


async def test_a_crashed_slot_supervisor_ends_the_gateway_with_an_error_naming_the_slot(
    tmp_path: Path, broker: ManagedBroker, pg_url: str
) -> None:
    """The slot's connection drops and reconnecting fails with an error the session does not
    retry (a bug, here injected through the client factory): Gateway.wait() raises."""
    gw = Gateway(fleet_config(tmp_path / "gw", broker, pg_url, mqtt_slots=1, mqtt_slot_lease_s=30.0))
    await gw.start()
    try:
        ingress = slots_of(gw)
        assert isinstance(ingress, SlotIngress)
        original = ingress._make_client

        def broken(slot: str) -> Mqtt5Client:
            raise RuntimeError("injected: cannot build a client")

        ingress._make_client = broken
        waiter = asyncio.create_task(gw.wait())
        session = ingress.sessions["telematics-gateway-1"]
        assert session.client is not None
        session.client.abort()  # the connection drops: the supervisor reconnects, and crashes
        with pytest.raises(SlotSupervisorError, match=r"telematics-gateway-1.*injected"):
            await asyncio.wait_for(waiter, 30)
        ingress._make_client = original
    finally:
        await gw.stop()


async def test_a_standby_gateway_delivers_a_remote_command_through_a_publish_only_connection(
    tmp_path: Path, broker: ManagedBroker, pg_url: str
) -> None:
    """b holds no slot (a has the only one): it has no ingest session, yet a backend asking b
    reaches the car, through b's own publish-only connection to the broker."""
    a = Gateway(fleet_config(tmp_path / "a", broker, pg_url, mqtt_slots=1))
    b = Gateway(fleet_config(tmp_path / "b", broker, pg_url, mqtt_slots=1))
    car = TestVehicle("WP0ZZZ99ZJS100199", broker.port)
    await a.start()
    try:
        await b.start()
        try:
            assert slots_of(b).held == frozenset() and slots_of(a).held == {"telematics-gateway-1"}
            await car.connect(with_will=False)
            await car.listen()
            async with gateway_channel(b) as channel:
                stub = vehicles_pb2_grpc.VehicleServiceStub(channel)
                await eventually(lambda: get_vehicle(stub, car.vin),
                                 lambda v: v is not None and v.presence == vehicles_pb2.PRESENCE_ONLINE)
                sent = await stub.SendRemoteCommand(
                    vehicles_pb2.SendRemoteCommandRequest(vin=car.vin, name="flash_lights")
                )
            down = await asyncio.wait_for(car.downlinks.get(), 30)
            assert down.remote_command.command_id == sent.command_id
            assert slots_of(b).held == frozenset()  # still a standby: no ingest session taken
        finally:
            await b.stop()
    finally:
        await car.close()
        await a.stop()
