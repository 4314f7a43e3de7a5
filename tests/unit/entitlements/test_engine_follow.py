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

from gateway.clock import ManualClock
from gateway.config import Config
from gateway.entitlements import EntitlementKind, EntitlementState
from gateway.entitlements.engine import EntitlementEngine
from gateway.entitlements.ledger.postgres import PostgresLedger
from gateway.metrics import Metrics
from gateway.model import VehicleSession
from gateway.session.hub import EventHub
from gateway.store.backends import build_backends


async def _publish(topic: str, payload: bytes) -> None:
    return None


def _no_session(vin: str) -> VehicleSession | None:
    return None


class Gateway:
    """One gateway's engine on the shared database."""

    def __init__(self, ledger: PostgresLedger, clock: ManualClock) -> None:
        self.ledger = ledger
        self.metrics = Metrics()
        self.hub = EventHub()
        self.engine = EntitlementEngine(ledger=ledger, clock=clock, metrics=self.metrics, publish=_publish,
                                        session_of=_no_session, hub=self.hub, peers=ledger)

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
