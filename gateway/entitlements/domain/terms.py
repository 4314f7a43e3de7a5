"""Contract terms as pure functions: withdrawal, cancellation, renewal, permissions (R3 R8 R10
R11 R15 R16).

Calendar definitions (the source is silent on these; the choices are deliberate):

- All calendar logic is in UTC, not the customer's local time zone.
- "End of the month" is the first instant of the next month (00:00:00 UTC on the 1st). An
  entitlement is usable up to, not including, that instant.
- R15 "within 14 days of booking": the booking day is day 0 and is not counted; the period
  runs to the end of day 14 (the way statutory periods are counted). Booked on 1 March at any
  time, a withdrawal is accepted until 15 March 23:59:59 UTC and refused from 16 March 00:00.
  This is at least 14 x 24 h and at most 15 x 24 h after the booking.
- R16 "one-day notice to the end of the month": the whole last calendar day of the month must
  lie after the notice. A cancellation before 00:00 UTC of the month's last day ends the
  subscription at the end of that month; on the last day itself it ends at the end of the
  next month. (On the 29th of a 30-day month: this month; on the 30th: next month.)
- R10 notice period for term-based services: the source gives none, so `notice_s` defaults
  to 0 (cancel any time up to the end of the term).
"""

from __future__ import annotations

import calendar
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import assert_never

from gateway.entitlements.domain.types import (
    Entitlement,
    EntitlementKind,
    GrantRequest,
    InvalidGrant,
    PermissionRefused,
    PurchaserRole,
)
from gateway.model import is_valid_vin

DAY_S = 86_400.0
WITHDRAWAL_DAYS = 14  # R15

# Entitlement ids derive from the order id, so a retried grant finds the same id.
_ID_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "urn:telematics-gateway:entitlement")


@dataclass(frozen=True, slots=True)
class TermDecision:
    """The answer to "may this end, and when?". When refused, `reason` is machine-readable."""

    allowed: bool
    effective_end: float | None
    reason: str = ""
    message: str = ""


@dataclass(frozen=True, slots=True)
class Permission:
    """A permission as a value: whether, and if not, why (R3)."""

    allowed: bool
    reason: str = ""
    message: str = ""


# -- calendar ------------------------------------------------------------------------------


def _utc(t: float) -> datetime:
    return datetime.fromtimestamp(t, tz=UTC)


def end_of_month(t: float) -> float:
    """The first instant (UTC) of the month after the one containing `t`."""
    d = _utc(t)
    year, month = (d.year + 1, 1) if d.month == 12 else (d.year, d.month + 1)
    return datetime(year, month, 1, tzinfo=UTC).timestamp()


def add_months(t: float, months: int) -> float:
    """`t` moved by whole calendar months, same time of day; the day is clamped to the month's
    last day (31 Jan + 1 month = 28/29 Feb)."""
    d = _utc(t)
    year, month0 = divmod(d.year * 12 + d.month - 1 + months, 12)
    day = min(d.day, calendar.monthrange(year, month0 + 1)[1])
    return d.replace(year=year, month=month0 + 1, day=day).timestamp()


# -- R15: unlimited FoD, 14-day withdrawal ---------------------------------------------------


def withdrawal_deadline(booked_at: float, days: int = WITHDRAWAL_DAYS) -> float:
    """First instant at which a withdrawal is refused: the start of day `days + 1` (R15)."""
    d = _utc(booked_at)
    booking_day = datetime(d.year, d.month, d.day, tzinfo=UTC)
    return (booking_day + timedelta(days=days + 1)).timestamp()


def withdraw_unlimited(booked_at: float, now: float) -> TermDecision:
    """R15: free withdrawal within 14 days of booking; it ends the entitlement at once."""
    deadline = withdrawal_deadline(booked_at)
    if now < deadline:
        return TermDecision(allowed=True, effective_end=now)
    return TermDecision(
        allowed=False,
        effective_end=None,
        reason="withdrawal_period_over",
        message=(
            f"the 14-day withdrawal period ended at {_utc(deadline).isoformat()}; "
            "an unlimited function stays with the vehicle (R15)"
        ),
    )


# -- R16: monthly FoD ------------------------------------------------------------------------


def monthly_cancel_end(now: float) -> float:
    """R16: end of this month with one full day of notice, else end of the next month."""
    month_end = end_of_month(now)
    last_day_starts = month_end - DAY_S  # UTC has no DST, so the last day is exactly 24 h
    if now < last_day_starts:
        return month_end
    return end_of_month(month_end)


# -- R10: fixed terms and auto-renewal -------------------------------------------------------


def renewed_term_end(entitlement: Entitlement) -> float:
    """The end of the term after the current one (R10 auto-renewal).

    A term given in months renews by calendar months counted from the first term's start, so
    a term starting on 31 January does not drift to the 28th. Otherwise the term's length in
    seconds is repeated.
    """
    if entitlement.term_end is None:
        raise ValueError(f"{entitlement.entitlement_id} has no term to renew")
    periods = entitlement.renewals + 1  # terms so far, the current one included
    months = entitlement.term_months
    if months is not None:
        return add_months(entitlement.term_start, months * (periods + 1))
    length = (entitlement.term_end - entitlement.term_start) / periods
    return entitlement.term_end + length


def cancel_fixed_term(entitlement: Entitlement, now: float, *, notice_s: float = 0.0) -> TermDecision:
    """R10: cancelling switches auto-renewal off and the term runs to its end. Inside the
    notice period an auto-renewing contract has already committed to one more term."""
    term_end = entitlement.term_end
    if term_end is None:
        return TermDecision(allowed=True, effective_end=now)
    if entitlement.auto_renew and now > term_end - notice_s:
        return TermDecision(allowed=True, effective_end=renewed_term_end(entitlement))
    return TermDecision(allowed=True, effective_end=term_end)


def cancel_terms(entitlement: Entitlement, now: float, *, notice_s: float = 0.0) -> TermDecision:
    """When a customer cancellation at `now` would end the entitlement, or why it cannot."""
    kind = entitlement.kind
    match kind:
        case EntitlementKind.FOD_UNLIMITED:
            return withdraw_unlimited(entitlement.booked_at, now)
        case EntitlementKind.FOD_MONTHLY:
            return TermDecision(allowed=True, effective_end=monthly_cancel_end(now))
        case EntitlementKind.SERVICE | EntitlementKind.FIXED_TERM:
            # A service without a term (term_end None) ends at once.
            return cancel_fixed_term(entitlement, now, notice_s=notice_s)
        case _:
            assert_never(kind)


def next_term_check_at(entitlement: Entitlement) -> float | None:
    """When the term must next be looked at (end or renewal); None when nothing is due."""
    if entitlement.state.is_ending:
        return None
    if entitlement.effective_end is not None:
        return entitlement.effective_end
    return entitlement.term_end


def remaining_term_s(entitlement: Entitlement, now: float) -> float | None:
    """R11: seconds left in the current term; None for unlimited or open month-by-month."""
    if entitlement.state.is_ending:
        return 0.0
    end = next_term_check_at(entitlement)
    if end is None:
        return None
    return max(0.0, end - now)


# -- R3 R8 and idempotency -------------------------------------------------------------------


def can_grant(purchaser_role: PurchaserRole, is_owner: bool) -> Permission:
    """R3: only the vehicle owner may purchase services; secondary users may not."""
    match purchaser_role:
        case PurchaserRole.SECONDARY_USER:
            return Permission(
                allowed=False,
                reason="secondary_user",
                message="only the vehicle owner may purchase services (R3)",
            )
        case PurchaserRole.OWNER:
            if not is_owner:
                return Permission(
                    allowed=False,
                    reason="not_owner",
                    message="the purchaser is not the owner of this vehicle (R3)",
                )
            return Permission(allowed=True)
        case _:
            assert_never(purchaser_role)


def ensure_same_vin(entitlement: Entitlement, vin: str) -> None:
    """R8: an entitlement belongs to its VIN forever; anything else is refused."""
    if entitlement.vin != vin:
        raise PermissionRefused(
            "other_vehicle",
            f"entitlement {entitlement.entitlement_id} belongs to another vehicle (R8)",
        )


def same_order(existing: Entitlement, request: GrantRequest) -> bool:
    """True when `request` is a retry of the order behind `existing` (same id, same content).
    False under the same order id means a conflict."""
    return existing.request == request


def entitlement_id_for(order_id: str) -> str:
    return str(uuid.uuid5(_ID_NAMESPACE, order_id))


def check_request(request: GrantRequest) -> None:
    """Raise InvalidGrant when the order is malformed or its term fields contradict its kind."""

    def bad(reason: str, message: str) -> InvalidGrant:
        return InvalidGrant(reason, f"order {request.order_id!r}: {message}")

    if not request.order_id or not request.product_id or not request.purchaser:
        raise bad("missing_field", "order id, product id and purchaser are required")
    if not is_valid_vin(request.vin):
        raise bad("invalid_vin", f"{request.vin!r} is not a 17-character VIN")
    has_term = request.term_end is not None or request.term_months is not None
    if request.term_end is not None and request.term_months is not None:
        raise bad("invalid_term", "give term_end or term_months, not both")
    if request.term_months is not None and request.term_months < 1:
        raise bad("invalid_term", "term_months must be at least 1")
    start = request.booked_at if request.term_start is None else request.term_start
    if request.term_end is not None and request.term_end <= start:
        raise bad("invalid_term", "term_end must be after the term start")
    kind = request.kind
    match kind:
        case EntitlementKind.FOD_UNLIMITED | EntitlementKind.FOD_MONTHLY:
            # R15/R16 define these terms; a term or auto-renew flag would contradict them.
            if has_term or request.auto_renew:
                raise bad("invalid_term", f"{kind} takes no term and no auto-renew flag")
        case EntitlementKind.FIXED_TERM:
            if not has_term:
                raise bad("invalid_term", "a fixed-term order needs term_end or term_months")
        case EntitlementKind.SERVICE:
            if request.auto_renew and not has_term:
                raise bad("invalid_term", "auto-renew needs a term")
        case _:
            assert_never(kind)


def initial_term(request: GrantRequest) -> tuple[float, float | None]:
    """(term_start, term_end) of the first term of a checked request."""
    start = request.booked_at if request.term_start is None else request.term_start
    if request.term_months is not None:
        return start, add_months(start, request.term_months)
    return start, request.term_end


def cancel_rule(kind: EntitlementKind) -> str:
    """The rule that decides a cancellation's effective end."""
    match kind:
        case EntitlementKind.FOD_UNLIMITED:
            return "R15"
        case EntitlementKind.FOD_MONTHLY:
            return "R16"
        case EntitlementKind.SERVICE | EntitlementKind.FIXED_TERM:
            return "R10"
        case _:
            assert_never(kind)


def stops_with_account(e: Entitlement) -> bool:
    """R4: what an account deletion ends on the account's vehicles.

    Services and monthly FoD subscriptions are delivery for that account: they end. An
    unlimited FoD the car has unlocked was paid once and stays with the vehicle (R15); one not
    unlocked yet was never billed (R14) and ends.
    """
    if e.kind is EntitlementKind.FOD_UNLIMITED:
        return e.unlocked_at is None
    return True
