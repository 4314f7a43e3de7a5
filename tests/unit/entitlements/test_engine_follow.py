"""Two entitlement engines on one PostgreSQL database (two gateways): each one's view follows
what the other wrote (engine/_follow.py), on its next tick or when its hub is woken (NOTIFY),
without a conflict and without a restart."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from engine_harness import OWNER, VIN, at, order
from support import eventually

from gateway._gen.telematics.v1 import downlink_pb2, uplink_pb2
from gateway.clock import ManualClock
from gateway.config import Config
from gateway.entitlements import EntitlementKind, EntitlementState
from gateway.entitlements.engine import EntitlementEngine, VehicleUpdate
from gateway.entitlements.ledger.postgres import PostgresLedger
from gateway.metrics import Metrics
from gateway.model import (
    ChargingPlug,
    LockState,
    PowerState,
    Presence,
    VehicleSession,
    VehicleState,
)
from gateway.session.hub import EventHub
from gateway.store.backends import build_backends


class Gateway:
    """One gateway's engine on the shared database."""

    def __init__(self, ledger: PostgresLedger, clock: ManualClock) -> None:
        self.ledger = ledger
        self.clock = clock
        self.metrics = Metrics()
        self.hub = EventHub()
        self.sessions: dict[str, VehicleSession] = {}  # the cars whose messages reached this one
        self.published: list[downlink_pb2.Downlink] = []
        self.engine = EntitlementEngine(
            ledger=ledger, clock=clock, metrics=self.metrics, publish=self._publish,
            session_of=self.sessions.get, hub=self.hub, peers=ledger,
        )

    async def _publish(self, topic: str, payload: bytes) -> None:
        self.published.append(downlink_pb2.Downlink.FromString(payload))

    def sample(self, name: str) -> float | None:
        return self.metrics.registry.get_sample_value(name)

    def explained(self) -> list[str]:
        return [e.entitlement_id for e, _ in self.engine.explain(VIN, "en")]


@pytest.fixture
async def make_gateway(pg_url: str, tmp_path: Path) -> AsyncIterator[Callable[[], Awaitable[Gateway]]]:
    clock = ManualClock(start=at(2026, 3, 2))
    ledgers: list[PostgresLedger] = []

    async def make() -> Gateway:
        ledger = build_backends(Config(data_dir=str(tmp_path), store_url=pg_url)).ledger
        assert isinstance(ledger, PostgresLedger)
        await ledger.open()
        ledgers.append(ledger)
        gateway = Gateway(ledger, clock)
        await gateway.engine.start()
        return gateway

    yield make
    for ledger in ledgers:
        await ledger.close()


async def test_a_grant_on_one_gateway_is_in_the_others_view_after_its_next_tick(
    make_gateway: Callable[[], Awaitable[Gateway]],
) -> None:
    a, b = await make_gateway(), await make_gateway()
    await a.engine.set_owner(VIN, OWNER)
    e = await a.engine.grant(order(EntitlementKind.FIXED_TERM, term_months=12, auto_renew=True))
    assert b.explained() == []  # b started before the grant
    await b.engine.tick()
    assert b.explained() == [e.entitlement_id]
    assert b.sample("gateway_entitlements_followed_total") == 1
    # b's view now has the stored version: its write is not refused.
    revoked = await b.engine.revoke(e.entitlement_id, "support")
    assert revoked.state is EntitlementState.REVOKED
    assert b.sample("gateway_entitlement_conflicts_total") == 0
    await a.engine.tick()  # and a follows b's revocation
    assert a.explained() == []
    assert a.sample("gateway_entitlement_conflicts_total") == 0


async def test_a_gateway_does_not_read_again_what_it_wrote_itself(
    make_gateway: Callable[[], Awaitable[Gateway]],
) -> None:
    a = await make_gateway()
    await a.engine.set_owner(VIN, OWNER)
    await a.engine.grant(order(EntitlementKind.FIXED_TERM, term_months=12, auto_renew=True))
    await a.engine.tick()
    assert a.sample("gateway_entitlements_followed_total") == 0


async def test_a_wake_up_beyond_the_seen_cursor_makes_the_run_loop_follow_at_once(
    make_gateway: Callable[[], Awaitable[Gateway]],
) -> None:
    a, b = await make_gateway(), await make_gateway()
    run = asyncio.create_task(b.engine.run(tick_s=3600.0))  # no tick would come by time
    try:
        await a.engine.set_owner(VIN, OWNER)
        e = await a.engine.grant(order(EntitlementKind.FIXED_TERM, term_months=12, auto_renew=True))
        b.hub.notify(a.hub.latest)  # what the LISTEN connection does on a's NOTIFY

        async def view() -> list[str]:
            return b.explained()

        await eventually(view, lambda ids: ids == [e.entitlement_id])
    finally:
        run.cancel()


async def test_an_fod_result_for_the_other_gateways_command_unlocks_though_no_event_told_of_it(
    make_gateway: Callable[[], Awaitable[Gateway]],
) -> None:
    """Gateway a opens the R17 window and sends the unlock command (UNLOCK_PENDING, which writes
    no outbox event, so b's follower never hears of it); the car's success reaches b (the
    broker's round robin). b judges it on the stored entitlement, not on its view (pending),
    where it would be an illegal transition, dropped, and the car never repeats it (R14)."""
    a, b = await make_gateway(), await make_gateway()
    await a.engine.set_owner(VIN, OWNER)
    e = await a.engine.grant(order(EntitlementKind.FOD_UNLIMITED))
    await b.engine.tick()  # b's view: the FoD, pending
    car = VehicleSession(vin=VIN, visited_country="DE", home_country="DE", presence=Presence.ONLINE,
                         state=VehicleState(PowerState.OFF, LockState.LOCKED, ChargingPlug.DISCONNECTED))
    a.sessions[VIN] = car
    await a.engine.on_vehicle_batch([VehicleUpdate(car)])  # parked: the R17 wait starts on a
    a.clock.advance(601)
    await a.engine.tick()
    [command] = [d.fod_command for d in a.published if d.HasField("fod_command")]
    result = uplink_pb2.FodResult(command_id=command.command_id, entitlement_id=e.entitlement_id,
                                  action=command.action, success=True)
    await b.engine.on_vehicle_batch([VehicleUpdate(car, fod_result=result)])
    stored = await a.ledger.get(e.entitlement_id)
    assert stored is not None and stored.state is EntitlementState.UNLOCKED
    kinds = [ev.kind for ev in await a.ledger.read_events(0, 100, VIN)]
    assert kinds.count("billable") == 1, kinds


async def test_a_boot_right_after_a_grant_on_the_other_gateway_finds_the_service(
    make_gateway: Callable[[], Awaitable[Gateway]],
) -> None:
    """R13 across gateways: the grant commits on a, the car's boot reaches b before b has
    followed a's NOTIFY (no tick here). b reads the car's entitlements as stored before judging
    the boot, so the service is due now, not PENDING until the car's next restart."""
    a, b = await make_gateway(), await make_gateway()
    await a.engine.set_owner(VIN, OWNER)
    e = await a.engine.grant(order())
    car = VehicleSession(vin=VIN, visited_country="DE", home_country="DE", presence=Presence.ONLINE,
                         presence_changed_at=b.clock.now())
    b.sessions[VIN] = car
    await b.engine.on_vehicle_batch([VehicleUpdate(car, booted_online=True)])
    stored = await b.ledger.get(e.entitlement_id)
    assert stored is not None and stored.state is not EntitlementState.PENDING
    assert b.explained() == [e.entitlement_id]


async def test_a_grant_retried_on_the_other_gateway_puts_the_stored_entitlement_in_its_view(
    make_gateway: Callable[[], Awaitable[Gateway]],
) -> None:
    a, b = await make_gateway(), await make_gateway()
    await a.engine.set_owner(VIN, OWNER)
    e = await a.engine.grant(order())
    again = await b.engine.grant(order())  # the backend retries on b (a died, say): same order
    assert again.entitlement_id == e.entitlement_id
    assert b.explained() == [e.entitlement_id]
