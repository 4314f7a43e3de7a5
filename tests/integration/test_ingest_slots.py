"""Several gateways on one broker (gateway/ingress/slots.py): one real Mosquitto started by the
test (the project's configuration and ACL, the gateways log in on its plain listener with the
gateway credentials, as to an external broker), one real PostgreSQL, cars on aiomqtt.

Messages are counted by each gateway's `gateway_ingress_batch_messages` sum: every message the
pipeline processed, whatever it made of it (the per-car state is not what is tested here)."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from support import eventually
from test_cli_run import RunningGateway
from vehicle_client import TestVehicle

from gateway import topics
from gateway.app import Gateway
from gateway.broker.managed import ManagedBroker
from gateway.config import Config, load_config
from gateway.ingress.mqtt5 import InboundMessage, Mqtt5Client
from gateway.ingress.mqtt_session import MqttSession
from gateway.ingress.slot_ingress import SlotIngress
from load.harness import metric_sum, parse_metrics

pytestmark = pytest.mark.integration

GROUP = "fleet"
LEASE_S = 1.5
VINS = [f"WP0ZZZ99ZJS{100100 + i}" for i in range(8)]


def broker_url(broker: ManagedBroker) -> str:
    creds = broker.credentials
    assert creds is not None
    return f"mqtt://{creds.username}:{creds.password}@127.0.0.1:{broker.port}"


def fleet_config(directory: Path, broker: ManagedBroker, store_url: str, **overrides: Any) -> Config:
    """A gateway of the fleet: its own data_dir and ports, the shared broker and database."""
    values: dict[str, Any] = dict(
        data_dir=str(directory), mqtt_url=broker_url(broker), store_url=store_url,
        mqtt_shared_group=GROUP, mqtt_slots=2, mqtt_slot_lease_s=LEASE_S,
        grpc_listen="127.0.0.1:0", http_listen="127.0.0.1:0",
    )
    values.update(overrides)
    return load_config(None, env={}, **values)


def processed(gw: Gateway) -> int:
    """Messages this gateway's pipeline processed."""
    value = gw.metrics.registry.get_sample_value("gateway_ingress_batch_messages_sum")
    return int(value or 0)


def slots_of(gw: Gateway) -> SlotIngress:
    assert isinstance(gw.mqtt, SlotIngress)
    return gw.mqtt


async def settled(*gateways: Gateway) -> None:
    """Each gateway holds one slot and is connected as it."""
    await eventually(
        lambda: asyncio.sleep(0, [(len(slots_of(g).held), slots_of(g).connected) for g in gateways]),
        lambda states: all(state == (1, True) for state in states),
    )


@pytest.fixture
async def cars(broker: ManagedBroker) -> AsyncIterator[list[TestVehicle]]:
    vehicles = [TestVehicle(vin, broker.port) for vin in VINS]
    try:
        yield vehicles
    finally:
        for car in vehicles:
            await car.close()


async def test_mosquitto_queues_shared_messages_for_an_offline_member_and_the_acl_allows_share(
    broker: ManagedBroker,
) -> None:
    """What the design rests on (Mosquitto 2.0): the gateway user may subscribe through $share,
    and the broker goes on assigning a share of the messages to a member whose persistent
    session is offline, delivering them when it comes back; none is lost or duplicated."""
    creds = broker.credentials
    assert creds is not None
    got: dict[str, list[bytes]] = {"m1": [], "m2": []}
    members: dict[str, Mqtt5Client] = {}

    def member(cid: str) -> Mqtt5Client:
        def on_batch(batch: list[InboundMessage]) -> None:
            got[cid].extend(m.payload for m in batch)
            members[cid].ack(batch)

        members[cid] = Mqtt5Client(
            host="127.0.0.1", port=broker.port, client_id=cid, username=creds.username,
            password=creds.password, clean_start=False, session_expiry_s=3600, on_batch=on_batch,
        )
        return members[cid]

    for cid in got:
        assert await member(cid).connect() is False
        assert await members[cid].subscribe([(f, 1) for f in topics.subscriptions(GROUP)]) == [1, 1]
    car = TestVehicle(VINS[0], broker.port)
    await car.connect(with_will=False)
    try:
        members["m2"].abort()  # gone without DISCONNECT, its session stays
        for _ in range(40):
            await car.heartbeat()
        await eventually(lambda: asyncio.sleep(0, len(got["m1"])), lambda n: n >= 20)
        assert len(got["m2"]) == 0
        assert await member("m2").connect() is True  # the session was kept
        await eventually(lambda: asyncio.sleep(0, len(got["m1"]) + len(got["m2"])), lambda n: n == 41)
        assert len(got["m2"]) >= 15  # its share, queued while it was offline
        assert len(set(got["m1"]) | set(got["m2"])) == 41
    finally:
        await car.close()
        for client in members.values():
            await client.disconnect()


async def test_two_gateways_split_the_fleet_and_each_message_is_processed_once(
    tmp_path: Path, broker: ManagedBroker, pg_url: str, cars: list[TestVehicle]
) -> None:
    a = Gateway(fleet_config(tmp_path / "a", broker, pg_url))
    b = Gateway(fleet_config(tmp_path / "b", broker, pg_url))
    await a.start()
    try:
        assert slots_of(a).held == {"telematics-gateway-1", "telematics-gateway-2"}  # alone: both
        await b.start()
        try:
            await settled(a, b)  # a handed one back, b claimed it
            assert slots_of(a).held | slots_of(b).held == {"telematics-gateway-1", "telematics-gateway-2"}
            per_car = 25
            for car in cars:
                await car.connect(with_will=False)  # the Hello: one message
                for _ in range(per_car - 1):
                    await car.heartbeat()  # QoS 1: acknowledged by the broker on return
            sent = len(cars) * per_car
            await eventually(lambda: asyncio.sleep(0, processed(a) + processed(b)), lambda n: n >= sent)
            # A sentinel round: a late duplicate of the first round would be counted by now.
            for car in cars:
                await car.heartbeat()
            sent += len(cars)
            await eventually(lambda: asyncio.sleep(0, processed(a) + processed(b)), lambda n: n >= sent)
            assert processed(a) + processed(b) == sent
            assert processed(a) > 0 and processed(b) > 0
            assert a.metrics.registry.get_sample_value("gateway_ingest_slots_held") == 1
        finally:
            await b.stop()
    finally:
        await a.stop()


async def test_a_killed_gateways_slot_is_taken_over_and_everything_acknowledged_reaches_the_survivor(
    tmp_path: Path, broker: ManagedBroker, pg_url: str, cars: list[TestVehicle]
) -> None:
    """The victim is a real process killed with SIGKILL while the cars publish: its connection
    drops without DISCONNECT and its leases are not renewed. The survivor (in-process) claims
    the dead slot once its lease expired and drains what the broker queued for it."""
    env = {
        "GATEWAY_MQTT_URL": broker_url(broker), "GATEWAY_STORE_URL": pg_url,
        "GATEWAY_MQTT_SHARED_GROUP": GROUP, "GATEWAY_MQTT_SLOTS": "2",
        "GATEWAY_MQTT_SLOT_LEASE_S": str(LEASE_S), "GATEWAY_LOG_LEVEL": "ERROR",
    }
    victim = RunningGateway(tmp_path / "victim", env=env)
    try:
        await asyncio.to_thread(victim.wait_ready)
        survivor = Gateway(fleet_config(tmp_path / "survivor", broker, pg_url))
        await survivor.start()
        try:
            await settled(survivor)  # the victim handed one slot back
            for car in cars:
                await car.connect(with_will=False)

            acked = 0
            acked_after_kill = 0
            killed = asyncio.Event()
            stop = asyncio.Event()

            async def publish() -> None:
                nonlocal acked, acked_after_kill
                while not stop.is_set():
                    for car in cars:
                        after = killed.is_set()  # set before this publish started
                        await car.heartbeat()
                        acked += 1
                        acked_after_kill += after

            publisher = asyncio.create_task(publish())

            def victim_processed() -> float:
                text = victim.http("/metrics")[1]
                return metric_sum(parse_metrics(text), "gateway_ingress_batch_messages_sum")

            await eventually(lambda: asyncio.to_thread(victim_processed), lambda n: n > 50)
            await eventually(lambda: asyncio.sleep(0, processed(survivor)), lambda n: n > 50)
            before = processed(survivor)
            victim.proc.send_signal(signal.SIGKILL)
            victim.proc.wait(timeout=10)
            killed_at = time.monotonic()
            killed.set()
            await eventually(lambda: asyncio.sleep(0, len(slots_of(survivor).held)), lambda n: n == 2)
            taken_after = time.monotonic() - killed_at
            await eventually(lambda: asyncio.sleep(0, acked_after_kill), lambda n: n >= 200)
            stop.set()
            await publisher
            # Every message acknowledged to a car after the kill reaches the survivor: those the
            # broker gave its own slot, and the dead slot's share, queued until the takeover.
            await eventually(lambda: asyncio.sleep(0, processed(survivor) - before),
                             lambda n: n >= acked_after_kill)
            assert slots_of(survivor).connected
            # The lease ran out and one renewal period later at most it was claimed (the rest:
            # a loaded machine's scheduling and the database round trips).
            assert taken_after < LEASE_S + LEASE_S / 3 + 2.0
            assert survivor.metrics.registry.get_sample_value(
                "gateway_ingest_slot_changes_total", {"change": "claimed"}
            ) == 2
        finally:
            await survivor.stop()
    finally:
        if victim.proc.poll() is None:
            victim.stop(signal.SIGKILL)


async def test_without_store_url_one_gateway_keeps_its_client_id_and_takes_no_lease(
    tmp_path: Path, broker: ManagedBroker, cars: list[TestVehicle]
) -> None:
    config = load_config(
        None, env={}, data_dir=str(tmp_path / "data"), mqtt_url=broker_url(broker),
        mqtt_shared_group=GROUP, grpc_listen="127.0.0.1:0", http_listen="127.0.0.1:0",
    )
    gw = Gateway(config)
    await gw.start()
    try:
        assert isinstance(gw.mqtt, MqttSession)
        assert gw.mqtt.client is not None and gw.mqtt.client.client_id == "telematics-gateway"
        assert gw.metrics.registry.get_sample_value("gateway_ingest_slots_held") == 0
        await cars[0].connect(with_will=False)
        await cars[0].heartbeat()
        await eventually(lambda: asyncio.sleep(0, processed(gw)), lambda n: n == 2)
    finally:
        await gw.stop()


async def test_a_gateway_that_cannot_renew_disconnects_before_its_leases_can_be_taken(
    tmp_path: Path, broker: ManagedBroker, pg_url: str
) -> None:
    """The database stops answering the lease table (a lock held by the test): the gateway's
    rounds time out, and it drops its slots while the database still counts them as its own,
    so no other gateway can be connected as them yet. When the database answers again it claims
    them back."""
    lease_s = 3.0
    gw = Gateway(fleet_config(tmp_path / "gw", broker, pg_url, mqtt_slot_lease_s=lease_s))
    await gw.start()
    blocker = await asyncpg.connect(pg_url)
    try:
        ingress = slots_of(gw)
        assert len(ingress.held) == 2 and ingress.connected
        transaction = blocker.transaction()
        await transaction.start()
        await blocker.execute("LOCK TABLE ingest_members IN ACCESS EXCLUSIVE MODE")  # heartbeats wait
        await eventually(lambda: asyncio.sleep(0, (ingress.held, ingress.sessions)),
                         lambda state: state == (frozenset(), {}))
        # Still ours by the database's clock: nobody could have claimed them before we let go.
        still_leased = await blocker.fetchval(
            "SELECT count(*) FROM ingest_slots WHERE holder = $1 AND expires_at > clock_timestamp()",
            ingress.holder,
        )
        assert still_leased == 2
        assert gw.readiness()["mqtt"] is False
        sample = gw.metrics.registry.get_sample_value
        assert sample("gateway_ingest_slot_changes_total", {"change": "lost"}) == 2
        assert (sample("gateway_ingest_lease_errors_total") or 0) >= 1
        await transaction.rollback()
        await eventually(lambda: asyncio.sleep(0, (len(ingress.held), ingress.connected)),
                         lambda state: state == (2, True), timeout=3 * lease_s)
    finally:
        await blocker.close()
        await gw.stop()
