"""Property: whatever the vehicle, the engine and the backend send in whatever order, an
entitlement is billed at most once (R14), and it never leaves its VIN (R8)."""

from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.entitlements import (
    Acked,
    BootWhileOnline,
    Cancel,
    Delivered,
    EntitlementError,
    EntitlementKind,
    FodAction,
    FodResult,
    FodWindowOpen,
    GrantRequest,
    LifecycleEventKind,
    PurchaserRole,
    Revoke,
    TermEnded,
    Trigger,
    grant,
    transition,
)

VIN = "WP0ZZZ99ZTS392124"
BOOKED = datetime(2026, 3, 1, 10, 0, tzinfo=UTC).timestamp()

ALL_TRIGGERS: list[Trigger] = [
    BootWhileOnline(),
    Delivered(),
    Acked(),
    FodWindowOpen(),
    *(FodResult(action, success) for action in FodAction for success in (True, False)),
    Cancel(),
    Revoke("test"),
    TermEnded(),
]
# Weighted towards the FoD command cycle, so that many sequences reach an unlock at all, then
# see duplicates, late results and endings around it.
FOD_CYCLE: list[Trigger] = [FodWindowOpen(), FodResult(FodAction.UNLOCK, True)] * 3
triggers = st.sampled_from(ALL_TRIGGERS + FOD_CYCLE)
# From "at once" to "after the withdrawal period and a few month ends".
steps_s = st.sampled_from([0.0, 1.0, 600.0, 86_400.0, 10 * 86_400.0, 40 * 86_400.0])


def request_for(kind: EntitlementKind) -> GrantRequest:
    term_months = 1 if kind in (EntitlementKind.FIXED_TERM, EntitlementKind.SERVICE) else None
    return GrantRequest(
        order_id="order-prop",
        vin=VIN,
        product_id="product",
        kind=kind,
        purchaser="owner@example.com",
        purchaser_role=PurchaserRole.OWNER,
        booked_at=BOOKED,
        term_months=term_months,
        auto_renew=kind is EntitlementKind.SERVICE,
    )


@settings(max_examples=400, deadline=None)
@given(
    kind=st.sampled_from(EntitlementKind),
    script=st.lists(st.tuples(steps_s, triggers), min_size=4, max_size=40),
)
def test_at_most_one_billable_event_per_entitlement_for_any_trigger_sequence(
    kind: EntitlementKind, script: list[tuple[float, Trigger]]
) -> None:
    e, events = grant(request_for(kind), BOOKED, is_owner=True)
    now = BOOKED
    for step, trigger in script:
        now += step
        try:
            e, emitted = transition(e, trigger, now)
        except EntitlementError:
            continue  # an illegal trigger or a refused cancel leaves the entitlement as it was
        events.extend(emitted)
        assert e.vin == VIN  # R8
    billable = [ev for ev in events if ev.kind is LifecycleEventKind.BILLABLE]
    assert len(billable) <= 1  # R14
    assert (e.billed_at is not None) == (len(billable) == 1)
    if not kind.is_fod:
        assert billable == []
    assert {ev.vin for ev in events} == {VIN}
