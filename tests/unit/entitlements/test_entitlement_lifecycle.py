"""The entitlement lifecycle: R3 R8 grants, R13 service delivery, R14 FoD billing, R10 R15 R16
endings, R17 R18 FoD commands. Every test drives `transition` with explicit times."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest

from gateway.clock import ManualClock
from gateway.entitlements import (
    Acked,
    BootWhileOnline,
    Cancel,
    CancelRefused,
    Delivered,
    Entitlement,
    EntitlementKind,
    EntitlementState,
    FodAction,
    FodResult,
    FodWindowOpen,
    GrantRequest,
    LifecycleEvent,
    LifecycleEventKind,
    OrderConflict,
    PermissionRefused,
    PurchaserRole,
    Revoke,
    TermEnded,
    TransitionError,
    Trigger,
    grant,
    transition,
)

VIN = "WP0ZZZ99ZTS392124"
S = EntitlementState
K = LifecycleEventKind
UNLOCK_OK = FodResult(FodAction.UNLOCK, success=True)
UNLOCK_FAILED = FodResult(FodAction.UNLOCK, success=False, reason="charging_cable_connected")
CANCEL_OK = FodResult(FodAction.CANCEL, success=True)


def at(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> float:
    return datetime(year, month, day, hour, minute, tzinfo=UTC).timestamp()


BOOKED = at(2026, 3, 1, 10, 0)


def order(kind: EntitlementKind, **changes: Any) -> GrantRequest:
    base = GrantRequest(
        order_id="order-1",
        vin=VIN,
        product_id="fod.matrix_led" if kind.is_fod else "svc.remote_services",
        kind=kind,
        purchaser="owner@example.com",
        purchaser_role=PurchaserRole.OWNER,
        booked_at=BOOKED,
    )
    return replace(base, **changes)


def granted(kind: EntitlementKind, **changes: Any) -> Entitlement:
    return grant(order(kind, **changes), BOOKED, is_owner=True)[0]


def run(e: Entitlement, triggers: Sequence[Trigger], now: float) -> tuple[Entitlement, list[LifecycleEvent]]:
    events: list[LifecycleEvent] = []
    for trigger in triggers:
        e, emitted = transition(e, trigger, now)
        events.extend(emitted)
    return e, events


def kinds(events: Sequence[LifecycleEvent]) -> list[LifecycleEventKind]:
    return [event.kind for event in events]


def unlocked(kind: EntitlementKind = EntitlementKind.FOD_UNLIMITED) -> Entitlement:
    e, _ = run(granted(kind), [FodWindowOpen(), UNLOCK_OK], BOOKED + 3600)
    return e


def active_service(kind: EntitlementKind = EntitlementKind.SERVICE, **changes: Any) -> Entitlement:
    e, _ = run(granted(kind, **changes), [BootWhileOnline(), Acked()], BOOKED)
    return e


# -- grant: R3, R8, idempotency ----------------------------------------------------------------


def test_grant_creates_a_pending_entitlement_and_emits_granted() -> None:
    e, events = grant(order(EntitlementKind.FOD_MONTHLY), BOOKED, is_owner=True)
    assert e.state is S.PENDING
    assert (e.vin, e.order_id, e.granted_at) == (VIN, "order-1", BOOKED)
    assert kinds(events) == [K.GRANTED]


def test_grant_by_a_secondary_user_is_refused() -> None:
    request = order(EntitlementKind.SERVICE, purchaser_role=PurchaserRole.SECONDARY_USER)
    with pytest.raises(PermissionRefused) as refused:
        grant(request, BOOKED, is_owner=False)
    assert refused.value.reason == "secondary_user"  # R3


def test_regrant_of_the_same_order_returns_the_same_entitlement_without_events() -> None:
    first, _ = grant(order(EntitlementKind.SERVICE), BOOKED, is_owner=True)
    again, events = grant(order(EntitlementKind.SERVICE), BOOKED + 5, is_owner=True, existing=first)
    assert again is first
    assert events == []


def test_same_order_id_with_different_content_is_a_conflict() -> None:
    first, _ = grant(order(EntitlementKind.SERVICE), BOOKED, is_owner=True)
    other = order(EntitlementKind.SERVICE, vin="WP0ZZZ98ZPS100001")  # R8: never another VIN
    with pytest.raises(OrderConflict):
        grant(other, BOOKED, is_owner=True, existing=first)


def test_entitlement_id_is_stable_for_an_order_id() -> None:
    a, _ = grant(order(EntitlementKind.SERVICE), BOOKED, is_owner=True)
    b, _ = grant(order(EntitlementKind.SERVICE), BOOKED + 99, is_owner=True)
    assert a.entitlement_id == b.entitlement_id


# -- services: R13 -----------------------------------------------------------------------------


def test_service_is_delivered_after_the_next_boot_while_online() -> None:
    e, events = transition(granted(EntitlementKind.SERVICE), BootWhileOnline(), BOOKED + 60)
    assert e.state is S.DELIVERY_DUE
    assert kinds(events) == [K.DELIVERY_DUE]


def test_service_becomes_active_when_the_vehicle_acks() -> None:
    e, events = run(granted(EntitlementKind.SERVICE), [BootWhileOnline(), Delivered(), Acked()], BOOKED)
    assert e.state is S.ACTIVE
    assert kinds(events) == [K.DELIVERY_DUE, K.DELIVERED, K.ACTIVE]


def test_service_is_not_published_before_a_boot() -> None:
    with pytest.raises(TransitionError):
        transition(granted(EntitlementKind.SERVICE), Delivered(), BOOKED)


def test_reboot_before_the_ack_sends_the_set_again() -> None:
    e, _ = run(granted(EntitlementKind.SERVICE), [BootWhileOnline(), Delivered()], BOOKED)
    e, events = transition(e, BootWhileOnline(), BOOKED + 60)
    assert (e.state, kinds(events)) == (S.DELIVERY_DUE, [K.DELIVERY_DUE])


def test_boot_of_an_active_service_changes_nothing() -> None:
    e = active_service()
    assert transition(e, BootWhileOnline(), BOOKED + 60) == (e, [])


def test_fod_triggers_are_illegal_for_a_service() -> None:
    with pytest.raises(TransitionError):
        transition(granted(EntitlementKind.SERVICE), FodWindowOpen(), BOOKED)


def test_service_revocation_completes_when_the_vehicle_acks_the_new_set() -> None:
    e, events = transition(active_service(), Revoke("account_deleted"), BOOKED + 60)  # R4
    assert (e.state, kinds(events)) == (S.REVOKE_PENDING, [K.REVOKE_DUE])
    e, events = transition(e, Acked(), BOOKED + 120)
    assert (e.state, kinds(events)) == (S.REVOKED, [K.REVOKED])
    assert events[0].reason == "account_deleted"


# -- FoD: R14 billing, R17 windows, R18 retries ------------------------------------------------


def test_fod_unlock_command_is_due_when_the_window_opens() -> None:
    e, events = transition(granted(EntitlementKind.FOD_UNLIMITED), FodWindowOpen(), BOOKED)
    assert (e.state, kinds(events)) == (S.UNLOCK_PENDING, [K.UNLOCK_DUE])


def test_confirmed_unlock_emits_unlocked_and_billable() -> None:
    e, events = run(granted(EntitlementKind.FOD_MONTHLY), [FodWindowOpen(), UNLOCK_OK], BOOKED)
    assert e.state is S.UNLOCKED
    assert kinds(events) == [K.UNLOCK_DUE, K.UNLOCKED, K.BILLABLE]
    assert e.billed_at == BOOKED


def test_fod_is_not_billed_when_ordered() -> None:
    _, events = grant(order(EntitlementKind.FOD_UNLIMITED), BOOKED, is_owner=True)
    assert K.BILLABLE not in kinds(events)  # R14: billed once unlocked, not when ordered


def test_billable_event_is_emitted_once_for_duplicate_unlock_results() -> None:
    e = unlocked()
    e2, events = transition(e, UNLOCK_OK, BOOKED + 7200)
    assert events == []
    assert e2 == e


def test_failed_unlock_is_retried_in_the_next_window() -> None:
    clock = ManualClock(BOOKED)
    e, events = run(granted(EntitlementKind.FOD_UNLIMITED), [FodWindowOpen(), UNLOCK_FAILED], BOOKED)
    assert (e.state, e.failures, kinds(events)[-1]) == (S.FAILED, 1, K.FAILED)
    assert events[-1].reason == "charging_cable_connected"
    clock.advance(3600)
    e, events = run(e, [FodWindowOpen(), UNLOCK_OK], clock.now())
    assert kinds(events) == [K.UNLOCK_DUE, K.UNLOCKED, K.BILLABLE]
    assert e.failures == 0


def test_late_success_after_a_recorded_failure_still_unlocks_and_bills_once() -> None:
    e, _ = run(granted(EntitlementKind.FOD_UNLIMITED), [FodWindowOpen(), UNLOCK_FAILED], BOOKED)
    e, events = run(e, [UNLOCK_OK, UNLOCK_OK], BOOKED + 60)
    assert kinds(events).count(K.BILLABLE) == 1


def test_failure_reported_after_a_success_is_ignored() -> None:
    e = unlocked()
    assert transition(e, UNLOCK_FAILED, BOOKED + 9000) == (e, [])


def test_unlock_result_without_a_command_is_illegal() -> None:
    with pytest.raises(TransitionError):
        transition(granted(EntitlementKind.FOD_UNLIMITED), UNLOCK_OK, BOOKED)


def test_acks_are_illegal_for_a_function_on_demand() -> None:
    with pytest.raises(TransitionError):
        transition(granted(EntitlementKind.FOD_MONTHLY), Acked(), BOOKED)


def test_boot_is_ignored_by_a_function_on_demand() -> None:
    e = granted(EntitlementKind.FOD_MONTHLY)
    assert transition(e, BootWhileOnline(), BOOKED) == (e, [])


# -- endings: R15 withdrawal -------------------------------------------------------------------


def test_withdrawal_on_day_13_of_an_unlocked_function_removes_it_from_the_car() -> None:
    e, events = transition(unlocked(), Cancel(), at(2026, 3, 14, 9, 0))
    assert kinds(events) == [K.WITHDRAWN, K.REVOKE_DUE]
    assert e.state is S.REVOKE_PENDING
    e, events = run(e, [FodWindowOpen(), CANCEL_OK], at(2026, 3, 14, 10, 0))
    assert kinds(events) == [K.CANCEL_DUE, K.REVOKED]
    assert e.state is S.REVOKED


def test_withdrawal_of_a_function_never_unlocked_revokes_it_at_once() -> None:
    e, events = transition(granted(EntitlementKind.FOD_UNLIMITED), Cancel(), BOOKED + 60)
    assert (e.state, kinds(events)) == (S.REVOKED, [K.WITHDRAWN, K.REVOKED])


def test_withdrawal_on_day_15_is_refused_and_the_function_stays() -> None:
    with pytest.raises(CancelRefused) as refused:
        transition(unlocked(), Cancel(), at(2026, 3, 16, 9, 0))
    assert refused.value.reason == "withdrawal_period_over"


def test_failed_cancel_in_the_car_keeps_the_revocation_pending() -> None:
    e, _ = transition(unlocked(), Cancel(), BOOKED + 86_400)
    e, events = transition(e, FodResult(FodAction.CANCEL, success=False), BOOKED + 90_000)
    assert (e.state, e.failures, kinds(events)) == (S.REVOKE_PENDING, 1, [K.FAILED])


# -- endings: R16 monthly ----------------------------------------------------------------------


def test_monthly_cancel_runs_to_the_end_of_the_month_then_is_revoked() -> None:
    e = unlocked(EntitlementKind.FOD_MONTHLY)
    e, events = transition(e, Cancel(), at(2026, 4, 29, 12, 0))
    assert kinds(events) == [K.CANCELLED]
    assert events[0].effective_end == at(2026, 5, 1)
    assert e.state is S.UNLOCKED  # still usable until the end of April
    with pytest.raises(TransitionError):
        transition(e, TermEnded(), at(2026, 4, 30, 23, 0))
    e, events = transition(e, TermEnded(), at(2026, 5, 1))
    assert (e.state, kinds(events)) == (S.REVOKE_PENDING, [K.REVOKE_DUE])


def test_second_cancel_keeps_the_end_fixed_by_the_first() -> None:
    e, _ = transition(unlocked(EntitlementKind.FOD_MONTHLY), Cancel(), at(2026, 4, 10))
    assert transition(e, Cancel(), at(2026, 4, 30, 12, 0)) == (e, [])


def test_running_monthly_subscription_has_no_term_end_to_reach() -> None:
    with pytest.raises(TransitionError):
        transition(unlocked(EntitlementKind.FOD_MONTHLY), TermEnded(), at(2027, 1, 1))


# -- endings: R10 fixed terms ------------------------------------------------------------------


def test_auto_renewing_term_renews_at_its_end() -> None:
    e = active_service(term_months=12, auto_renew=True)
    e, events = transition(e, TermEnded(), at(2027, 3, 1, 10, 0))
    assert kinds(events) == [K.RENEWED]
    assert e.term_end == at(2028, 3, 1, 10, 0)
    assert e.state is S.ACTIVE


def test_renewals_missed_during_an_outage_are_all_applied() -> None:
    e = active_service(term_months=1, auto_renew=True)
    e, events = transition(e, TermEnded(), at(2026, 6, 15))
    assert kinds(events) == [K.RENEWED] * 3  # 1 Apr, 1 May, 1 Jun
    assert e.term_end == at(2026, 7, 1, 10, 0)


def test_term_without_auto_renew_is_revoked_at_its_end() -> None:
    e = active_service(kind=EntitlementKind.FIXED_TERM, term_months=12)
    e, events = transition(e, TermEnded(), at(2027, 3, 1, 10, 0))
    assert (e.state, kinds(events)) == (S.REVOKE_PENDING, [K.REVOKE_DUE])
    assert events[0].reason == "term_ended"


def test_cancel_switches_auto_renew_off_and_the_term_runs_to_its_end() -> None:
    e = active_service(term_months=12, auto_renew=True)
    e, events = transition(e, Cancel(), at(2026, 9, 1))
    assert not e.auto_renew
    assert kinds(events) == [K.CANCELLED]
    assert events[0].effective_end == at(2027, 3, 1, 10, 0)
    e, events = transition(e, TermEnded(), at(2027, 3, 1, 10, 0))
    assert kinds(events) == [K.REVOKE_DUE]


def test_term_ending_before_delivery_revokes_without_touching_the_car() -> None:
    e = granted(EntitlementKind.FIXED_TERM, term_months=1)
    e, events = transition(e, TermEnded(), at(2026, 4, 1, 10, 0))
    assert (e.state, kinds(events)) == (S.REVOKED, [K.REVOKED])


# -- R14 edge: unlock confirmed after the end --------------------------------------------------


def test_unlock_confirmed_after_the_end_is_not_billed_and_is_cancelled_in_the_car() -> None:
    e, _ = run(granted(EntitlementKind.FOD_MONTHLY), [FodWindowOpen(), UNLOCK_FAILED], BOOKED)
    e, _ = transition(e, Revoke("refund"), BOOKED + 60)
    assert e.state is S.REVOKED
    e, events = transition(e, UNLOCK_OK, BOOKED + 120)  # the "failure" was a timeout
    assert kinds(events) == [K.UNLOCKED, K.REVOKE_DUE]
    assert e.state is S.REVOKE_PENDING
    assert e.billed_at is None


def test_events_carry_the_entitlements_vin() -> None:
    e, events = run(granted(EntitlementKind.FOD_MONTHLY), [FodWindowOpen(), UNLOCK_OK], BOOKED)
    assert {event.vin for event in events} == {VIN}  # R8
    assert {event.entitlement_id for event in events} == {e.entitlement_id}


def test_transition_records_the_time_of_the_last_change() -> None:
    e, _ = transition(granted(EntitlementKind.FOD_MONTHLY), FodWindowOpen(), BOOKED + 42)
    assert e.updated_at == BOOKED + 42
