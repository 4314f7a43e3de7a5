"""Contract terms: R15 withdrawal, R16 monthly notice, R10 terms and renewal, R11, R3, R8."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest

from gateway.entitlements import (
    Entitlement,
    EntitlementKind,
    GrantRequest,
    InvalidGrant,
    PermissionRefused,
    PurchaserRole,
    can_grant,
    ensure_same_vin,
    grant,
    remaining_term_s,
    same_order,
)
from gateway.entitlements.domain.terms import (
    add_months,
    cancel_terms,
    check_request,
    end_of_month,
    monthly_cancel_end,
    renewed_term_end,
    withdraw_unlimited,
    withdrawal_deadline,
)

VIN = "WP0ZZZ99ZTS392124"


def at(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0) -> float:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC).timestamp()


def order(kind: EntitlementKind, **changes: Any) -> GrantRequest:
    base = GrantRequest(
        order_id="order-1",
        vin=VIN,
        product_id="fod.matrix_led" if kind.is_fod else "svc.remote_services",
        kind=kind,
        purchaser="owner@example.com",
        purchaser_role=PurchaserRole.OWNER,
        booked_at=at(2026, 3, 1, 10, 0),
    )
    return replace(base, **changes)


def granted(kind: EntitlementKind, **changes: Any) -> Entitlement:
    request = order(kind, **changes)
    return grant(request, request.booked_at, is_owner=True)[0]


BOOKED = at(2026, 3, 1, 10, 0)


# -- R15: 14-day withdrawal of an unlimited FoD ----------------------------------------------


def test_withdrawal_on_day_13_is_accepted() -> None:
    decision = withdraw_unlimited(BOOKED, at(2026, 3, 14, 18, 0))
    assert decision.allowed


def test_withdrawal_on_the_last_second_of_day_14_is_accepted() -> None:
    # R15: the booking day is day 0; day 14 counts in full (booked 1 March -> until 15 March).
    assert withdraw_unlimited(BOOKED, at(2026, 3, 15, 23, 59, 59)).allowed


def test_withdrawal_on_day_15_is_refused_as_withdrawal_period_over() -> None:
    decision = withdraw_unlimited(BOOKED, at(2026, 3, 16, 0, 0))
    assert not decision.allowed
    assert decision.reason == "withdrawal_period_over"
    assert "R15" in decision.message
    assert decision.effective_end is None


def test_withdrawal_deadline_is_the_start_of_day_15_after_booking() -> None:
    assert withdrawal_deadline(BOOKED) == at(2026, 3, 16)


def test_withdrawal_window_is_never_shorter_than_14_full_days() -> None:
    late_booking = at(2026, 3, 1, 23, 59, 59)
    assert withdrawal_deadline(late_booking) - late_booking >= 14 * 86_400


def test_accepted_withdrawal_ends_the_entitlement_immediately() -> None:
    now = at(2026, 3, 5, 12, 0)
    assert withdraw_unlimited(BOOKED, now).effective_end == now


# -- R16: monthly FoD, one-day notice to the end of the month ----------------------------------


def test_end_of_month_is_the_first_instant_of_the_next_month() -> None:
    assert end_of_month(at(2026, 4, 30, 23, 59, 59)) == at(2026, 5, 1)
    assert end_of_month(at(2026, 4, 1)) == at(2026, 5, 1)


def test_monthly_cancel_on_the_29th_of_a_30_day_month_ends_that_month() -> None:
    assert monthly_cancel_end(at(2026, 4, 29, 23, 59, 59)) == at(2026, 5, 1)


def test_monthly_cancel_on_the_30th_of_a_30_day_month_ends_next_month() -> None:
    assert monthly_cancel_end(at(2026, 4, 30, 0, 0)) == at(2026, 6, 1)


def test_monthly_cancel_on_the_30th_of_a_31_day_month_ends_that_month() -> None:
    assert monthly_cancel_end(at(2026, 1, 30, 12, 0)) == at(2026, 2, 1)


def test_monthly_cancel_on_the_31st_of_a_31_day_month_ends_next_month() -> None:
    assert monthly_cancel_end(at(2026, 1, 31, 0, 0)) == at(2026, 3, 1)


def test_monthly_cancel_on_feb_28_of_a_leap_year_ends_on_feb_29() -> None:
    assert monthly_cancel_end(at(2028, 2, 28, 15, 0)) == at(2028, 3, 1)


def test_monthly_cancel_on_feb_29_of_a_leap_year_ends_at_the_end_of_march() -> None:
    assert monthly_cancel_end(at(2028, 2, 29, 1, 0)) == at(2028, 4, 1)


def test_monthly_cancel_on_feb_28_of_a_common_year_ends_at_the_end_of_march() -> None:
    assert monthly_cancel_end(at(2027, 2, 28, 1, 0)) == at(2027, 4, 1)


def test_monthly_cancel_in_mid_december_ends_on_january_1st() -> None:
    assert monthly_cancel_end(at(2026, 12, 15)) == at(2027, 1, 1)


def test_monthly_cancel_on_december_31st_ends_at_the_end_of_january() -> None:
    assert monthly_cancel_end(at(2026, 12, 31, 8, 0)) == at(2027, 2, 1)


def test_monthly_cancel_on_the_first_of_a_month_ends_that_month() -> None:
    assert monthly_cancel_end(at(2026, 6, 1)) == at(2026, 7, 1)


# -- R10: fixed terms and auto-renewal ---------------------------------------------------------


def test_add_months_clamps_to_the_last_day_of_a_shorter_month() -> None:
    assert add_months(at(2026, 1, 31, 9, 30), 1) == at(2026, 2, 28, 9, 30)
    assert add_months(at(2028, 1, 31), 1) == at(2028, 2, 29)
    assert add_months(at(2026, 11, 15), 3) == at(2027, 2, 15)


def test_term_given_in_months_ends_after_that_many_calendar_months() -> None:
    e = granted(EntitlementKind.FIXED_TERM, term_months=12)
    assert e.term_end == at(2027, 3, 1, 10, 0)


def test_renewal_of_a_monthly_term_keeps_the_day_of_month_of_the_first_term() -> None:
    e = granted(EntitlementKind.FIXED_TERM, booked_at=at(2026, 1, 31), term_months=1)
    assert e.term_end == at(2026, 2, 28)
    second = replace(e, term_end=renewed_term_end(e), renewals=1)
    assert second.term_end == at(2026, 3, 31)  # not 28 March: no drift
    assert renewed_term_end(second) == at(2026, 4, 30)


def test_renewal_of_a_term_given_as_an_end_time_repeats_its_length() -> None:
    e = granted(EntitlementKind.FIXED_TERM, term_end=BOOKED + 30 * 86_400)
    assert renewed_term_end(e) == BOOKED + 60 * 86_400
    second = replace(e, term_end=renewed_term_end(e), renewals=1)
    assert renewed_term_end(second) == BOOKED + 90 * 86_400


def test_cancelling_a_fixed_term_ends_it_at_the_term_end() -> None:
    e = granted(EntitlementKind.FIXED_TERM, term_months=12, auto_renew=True)
    decision = cancel_terms(e, at(2026, 6, 1))
    assert decision.allowed
    assert decision.effective_end == e.term_end


def test_cancelling_inside_the_notice_period_ends_after_the_next_term() -> None:
    e = granted(EntitlementKind.FIXED_TERM, term_months=12, auto_renew=True)
    decision = cancel_terms(e, at(2027, 2, 20), notice_s=30 * 86_400)
    assert decision.effective_end == at(2028, 3, 1, 10, 0)


def test_cancelling_a_service_without_a_term_ends_it_immediately() -> None:
    e = granted(EntitlementKind.SERVICE)
    now = at(2026, 3, 2)
    assert cancel_terms(e, now).effective_end == now


def test_remaining_term_is_the_time_to_the_term_end() -> None:
    e = granted(EntitlementKind.FIXED_TERM, term_end=BOOKED + 10 * 86_400)
    assert remaining_term_s(e, BOOKED + 86_400) == 9 * 86_400


def test_remaining_term_is_none_for_an_unlimited_function() -> None:
    assert remaining_term_s(granted(EntitlementKind.FOD_UNLIMITED), BOOKED) is None


def test_remaining_term_is_none_for_a_running_monthly_subscription() -> None:
    assert remaining_term_s(granted(EntitlementKind.FOD_MONTHLY), BOOKED) is None


def test_remaining_term_counts_to_the_effective_end_once_cancelled() -> None:
    e = replace(granted(EntitlementKind.FOD_MONTHLY), effective_end=at(2026, 4, 1))
    assert remaining_term_s(e, at(2026, 3, 31)) == 86_400


def test_remaining_term_never_goes_negative() -> None:
    e = granted(EntitlementKind.FIXED_TERM, term_end=BOOKED + 60)
    assert remaining_term_s(e, BOOKED + 3600) == 0.0


# -- R3, R8, idempotency, validation ---------------------------------------------------------


def test_owner_may_purchase() -> None:
    assert can_grant(PurchaserRole.OWNER, is_owner=True).allowed


def test_secondary_user_may_not_purchase() -> None:
    permission = can_grant(PurchaserRole.SECONDARY_USER, is_owner=False)
    assert not permission.allowed
    assert permission.reason == "secondary_user"
    assert "R3" in permission.message


def test_purchaser_claiming_owner_role_who_is_not_the_owner_is_refused() -> None:
    permission = can_grant(PurchaserRole.OWNER, is_owner=False)
    assert (permission.allowed, permission.reason) == (False, "not_owner")


def test_entitlement_for_another_vin_is_refused() -> None:
    e = granted(EntitlementKind.SERVICE)
    ensure_same_vin(e, VIN)
    with pytest.raises(PermissionRefused) as refused:
        ensure_same_vin(e, "WP0ZZZ98ZPS100001")
    assert refused.value.reason == "other_vehicle"


def test_same_order_with_same_content_is_the_same_entitlement() -> None:
    e = granted(EntitlementKind.FOD_MONTHLY)
    assert same_order(e, order(EntitlementKind.FOD_MONTHLY))


def test_same_order_id_with_different_content_is_not_the_same_order() -> None:
    e = granted(EntitlementKind.FOD_MONTHLY)
    assert not same_order(e, order(EntitlementKind.FOD_MONTHLY, product_id="fod.other"))


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"vin": "WP0ZZZ99ZTS39212I"}, "invalid_vin"),
        ({"order_id": ""}, "missing_field"),
        ({"kind": EntitlementKind.FIXED_TERM}, "invalid_term"),
        ({"term_months": 12}, "invalid_term"),
        ({"auto_renew": True}, "invalid_term"),
        ({"kind": EntitlementKind.SERVICE, "auto_renew": True}, "invalid_term"),
        ({"kind": EntitlementKind.SERVICE, "term_months": 0}, "invalid_term"),
        ({"kind": EntitlementKind.SERVICE, "term_end": BOOKED - 1}, "invalid_term"),
        ({"kind": EntitlementKind.SERVICE, "term_end": BOOKED + 9, "term_months": 1}, "invalid_term"),
    ],
)
def test_malformed_orders_are_invalid(changes: dict[str, Any], reason: str) -> None:
    with pytest.raises(InvalidGrant) as invalid:
        check_request(replace(order(EntitlementKind.FOD_UNLIMITED), **changes))
    assert invalid.value.reason == reason
