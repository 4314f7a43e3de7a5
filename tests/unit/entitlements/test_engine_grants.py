"""Engine, backend side: idempotent grants (R3, R8), cancellation terms (R10, R15, R16),
revocation and account deletion (R4)."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import pytest
from engine_harness import OWNER, VIN, VIN2, Bench, at, order, set_ids

from gateway.clock import ManualClock
from gateway.entitlements import (
    CancelRefused,
    EntitlementKind,
    InvalidGrant,
    OrderConflict,
    PermissionRefused,
    PurchaserRole,
)
from gateway.entitlements.engine import NotFound

MINUTE = 60.0


async def test_a_hundred_concurrent_identical_grants_make_one_entitlement(bench: Bench) -> None:
    results = await asyncio.gather(*(bench.engine.grant(order()) for _ in range(100)))
    assert len({e.entitlement_id for e in results}) == 1
    assert len(await bench.engine.list(VIN, include_ended=True)) == 1
    assert await bench.outbox() == ["granted"]


async def test_the_same_order_again_returns_the_same_entitlement(bench: Bench, clock: ManualClock) -> None:
    first = await bench.engine.grant(order())
    clock.advance(MINUTE)
    again = await bench.engine.grant(order())
    assert again == first


async def test_a_retry_with_a_defaulted_booking_time_is_the_same_order(
    bench: Bench, clock: ManualClock,
) -> None:
    first = await bench.engine.grant(order(booked_at=clock.now()), booked_at_given=False)
    clock.advance(MINUTE)
    again = await bench.engine.grant(order(booked_at=clock.now()), booked_at_given=False)
    assert again.entitlement_id == first.entitlement_id and again.booked_at == first.booked_at


async def test_same_order_id_with_different_content_is_a_conflict(bench: Bench) -> None:
    await bench.engine.grant(order())
    with pytest.raises(OrderConflict):
        await bench.engine.grant(order(product_id="svc.other"))


async def test_a_secondary_user_may_not_buy(bench: Bench) -> None:  # R3
    with pytest.raises(PermissionRefused) as err:
        await bench.engine.grant(order(purchaser_role=PurchaserRole.SECONDARY_USER))
    assert err.value.reason == "secondary_user"


async def test_only_the_vehicles_owner_may_buy(bench: Bench) -> None:  # R3
    with pytest.raises(PermissionRefused) as err:
        await bench.engine.grant(order(purchaser="someone@example.com"))
    assert err.value.reason == "not_owner"
    await bench.engine.set_owner(VIN, "someone@example.com")  # the car was sold
    e = await bench.engine.grant(order(purchaser="someone@example.com"))
    assert e.purchaser == "someone@example.com"


async def test_malformed_order_is_invalid(bench: Bench) -> None:
    with pytest.raises(InvalidGrant):
        await bench.engine.grant(order(vin="NOT-A-VIN"))


# -- cancellation terms --------------------------------------------------------------------------


async def test_unlimited_fod_can_be_withdrawn_on_day_13(bench: Bench, clock: ManualClock) -> None:  # R15
    eid = await bench.grant(EntitlementKind.FOD_UNLIMITED)
    clock.set(at(2026, 3, 14, 12))
    e, end, rule = await bench.engine.cancel(eid)
    assert (end, rule) == (clock.now(), "R15") and e.state.value == "revoked"
    assert await bench.outbox() == ["granted", "withdrawn", "revoked"]


async def test_unlimited_fod_cannot_be_withdrawn_on_day_15(bench: Bench, clock: ManualClock) -> None:  # R15
    eid = await bench.grant(EntitlementKind.FOD_UNLIMITED)
    clock.set(at(2026, 3, 16, 12))
    with pytest.raises(CancelRefused) as err:
        await bench.engine.cancel(eid)
    assert err.value.reason == "withdrawal_period_over" and "14-day" in err.value.message
    assert await bench.state(eid) == "pending"


async def test_monthly_cancelled_on_the_29th_of_a_30_day_month_ends_that_month(
    bench: Bench, clock: ManualClock
) -> None:  # R16
    eid = await bench.grant(EntitlementKind.FOD_MONTHLY, booked_at=at(2026, 4, 2))
    clock.set(at(2026, 4, 29, 18))
    _, end, rule = await bench.engine.cancel(eid)
    assert (end, rule) == (at(2026, 5, 1), "R16")


async def test_monthly_cancelled_on_the_last_day_ends_next_month(bench: Bench, clock: ManualClock) -> None:
    eid = await bench.grant(EntitlementKind.FOD_MONTHLY, booked_at=at(2026, 4, 2))
    clock.set(at(2026, 4, 30, 1))
    _, end, _ = await bench.engine.cancel(eid)
    assert end == at(2026, 6, 1)


async def test_second_cancel_keeps_the_first_end(bench: Bench, clock: ManualClock) -> None:
    eid = await bench.grant(EntitlementKind.FOD_MONTHLY)
    _, first, _ = await bench.engine.cancel(eid)
    clock.set(at(2026, 3, 31, 12))
    _, second, _ = await bench.engine.cancel(eid)
    assert first == second == at(2026, 4, 1)
    assert (await bench.outbox()).count("cancelled") == 1


async def test_cancelled_fixed_term_runs_to_its_end(bench: Bench, clock: ManualClock) -> None:  # R10
    eid = await bench.grant(EntitlementKind.FIXED_TERM, term_months=12, auto_renew=True)
    e, end, rule = await bench.engine.cancel(eid)
    assert (end, rule, e.auto_renew) == (at(2027, 3, 1, 10), "R10", False)
    clock.set(at(2027, 3, 1, 10))
    await bench.engine.tick()
    assert await bench.state(eid) == "revoked"  # never reached the car


async def test_unknown_entitlement_is_not_found(bench: Bench) -> None:
    with pytest.raises(NotFound):
        await bench.engine.cancel("nope")
    with pytest.raises(NotFound):
        await bench.engine.revoke("nope", "x")
    with pytest.raises(NotFound):
        await bench.engine.get("nope")


async def test_list_shows_ended_entitlements_only_when_asked(bench: Bench) -> None:
    keep = await bench.grant()
    gone = await bench.grant(order_id="o2", product_id="svc.b")
    await bench.engine.revoke(gone, "refund")
    assert [e.entitlement_id for e in await bench.engine.list(VIN, include_ended=False)] == [keep]
    assert len(await bench.engine.list(VIN, include_ended=True)) == 2
    assert await bench.engine.list(VIN2, include_ended=True) == []


# -- R4 account deletion -------------------------------------------------------------------------


async def test_deleting_the_account_stops_delivery_on_its_vehicles(bench: Bench, clock: ManualClock) -> None:
    service = await bench.grant()
    unlocked = await bench.grant(EntitlementKind.FOD_UNLIMITED, order_id="fod-1")
    monthly = await bench.grant(EntitlementKind.FOD_MONTHLY, order_id="fod-2", product_id="fod.acc")
    await bench.boot()
    await bench.engine.tick()
    await bench.ack(1)
    await bench.park()
    clock.advance(10 * MINUTE)
    await bench.engine.tick()
    for command in bench.commands():
        await bench.fod_result(command, success=True)

    assert await bench.engine.delete_account(OWNER) == [VIN, VIN2]
    assert await bench.state(service) == "revoke_pending"
    assert await bench.state(monthly) == "revoke_pending"
    assert await bench.state(unlocked) == "unlocked"  # R15: paid once, stays with the car
    await bench.engine.tick()
    assert set_ids(bench.sets()[-1]) == []
    # The account can no longer buy for the car; a retried deletion answers the same.
    with pytest.raises(PermissionRefused):
        await bench.engine.grant(order(order_id="late"))
    assert await bench.engine.delete_account(OWNER) == [VIN, VIN2]


async def test_a_sold_cars_services_stay_when_the_old_account_is_deleted(bench: Bench) -> None:  # R8
    eid = await bench.grant()
    await bench.engine.set_owner(VIN, "buyer@example.com")
    assert await bench.engine.delete_account(OWNER) == [VIN2]
    assert await bench.state(eid) == "pending"


async def test_an_entitlement_stays_with_its_vin(bench: Bench) -> None:  # R8
    e = await bench.engine.grant(order())
    with pytest.raises(OrderConflict):
        await bench.engine.grant(replace(order(), vin=VIN2))
    assert (await bench.engine.get(e.entitlement_id)).vin == VIN
