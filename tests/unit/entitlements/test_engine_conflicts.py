"""Two entitlement engines on one database (two gateways): a write from a stale view is refused
(VersionConflict), the engine reads the entitlement again, and the next attempt works from what
is stored instead of being refused forever. On SQLite two ledgers on one file stand in for two
gateways (a deployment runs one gateway per SQLite file; the path is the same)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from engine_harness import OWNER, VIN, at, order

from gateway.clock import ManualClock
from gateway.entitlements import EntitlementKind, EntitlementState
from gateway.entitlements.engine import EntitlementEngine
from gateway.entitlements.ledger import Ledger, VersionConflict
from gateway.metrics import Metrics
from gateway.model import VehicleSession
from gateway.session.hub import EventHub
from gateway.store.backends import Backends


async def _publish(topic: str, payload: bytes) -> None:
    return None


def _no_session(vin: str) -> VehicleSession | None:
    return None


async def engine_on(ledger: Ledger, metrics: Metrics, clock: ManualClock) -> EntitlementEngine:
    await ledger.open()
    engine = EntitlementEngine(ledger=ledger, clock=clock, metrics=metrics, publish=_publish,
                               session_of=_no_session, hub=EventHub())
    await engine.start()
    return engine


async def test_a_write_from_a_stale_view_is_refused_once_then_works_from_the_stored_entitlement(
    make_backends: Callable[[], Backends],
) -> None:
    clock = ManualClock(start=at(2026, 3, 2))
    ma, mb = Metrics(), Metrics()
    a = await engine_on(make_backends().ledger, ma, clock)
    await a.set_owner(VIN, OWNER)
    e = await a.grant(order(EntitlementKind.FIXED_TERM, term_months=12, auto_renew=True))
    b = await engine_on(make_backends().ledger, mb, clock)  # loads e as granted
    await a.revoke(e.entitlement_id, "support")
    with pytest.raises(VersionConflict):
        await b.revoke(e.entitlement_id, "billing")  # b's view: still live
    assert mb.registry.get_sample_value("gateway_entitlement_conflicts_total") == 1
    again = await b.revoke(e.entitlement_id, "billing")  # from the stored one: no conflict
    assert again.state is EntitlementState.REVOKED
    assert mb.registry.get_sample_value("gateway_entitlement_conflicts_total") == 1
