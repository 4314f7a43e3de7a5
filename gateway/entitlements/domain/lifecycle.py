"""The entitlement lifecycle as one pure function: `transition(entitlement, trigger, now)`
returns the new entitlement and the lifecycle events to write to the outbox.

Triggers come from the vehicle (boot, ack, FoD result), from the engine (a set was published,
an R17 window opened, a term end is due) and from the backend (cancel, revoke).

Transition table ("-" = no change, no events; "error" = TransitionError; events in brackets).
Triggers of the other delivery channel (Delivered, Acked on an FoD; FodWindowOpen, FodResult
on a service) raise TransitionError in every state.
Services (SERVICE, FIXED_TERM):

| state          | BootWhileOnline             | Delivered          | Acked                |
|----------------|-----------------------------|--------------------|----------------------|
| PENDING        | DELIVERY_DUE [DELIVERY_DUE] | error              | error                |
| DELIVERY_DUE   | - [DELIVERY_DUE] (resend)   | DELIVERED [DELIV.] | ACTIVE [ACTIVE]      |
| DELIVERED      | DELIVERY_DUE [DELIVERY_DUE] | -                  | ACTIVE [ACTIVE]      |
| ACTIVE         | -                           | -                  | -                    |
| REVOKE_PENDING | - [REVOKE_DUE] (resend)     | -                  | REVOKED [REVOKED]    |
| REVOKED        | -                           | -                  | -                    |

FoD (FOD_UNLIMITED, FOD_MONTHLY); BootWhileOnline is ignored for FoD (a vehicle-wide fact):

| state          | FodWindowOpen                 | unlock ok                 | unlock failed     |
|----------------|-------------------------------|---------------------------|-------------------|
| PENDING        | UNLOCK_PENDING [UNLOCK_DUE]   | error                     | error             |
| UNLOCK_PENDING | - [UNLOCK_DUE] (resend)       | UNLOCKED [UNLOCKED, BILL.]| FAILED [FAILED]   |
| FAILED         | UNLOCK_PENDING [UNLOCK_DUE]   | UNLOCKED [UNLOCKED, BILL.]| - (duplicate)     |
| UNLOCKED       | -                             | - (duplicate)             | - (late)          |
| REVOKE_PENDING | - [CANCEL_DUE]                | - [UNLOCKED] first time   | -                 |
| REVOKED        | -                             | REVOKE_PENDING [UNLOCKED, | -                 |
|                |                               |   REVOKE_DUE] first time  |                   |

A cancel result is legal only in REVOKE_PENDING (ok: REVOKED [REVOKED]; failed: - [FAILED])
and ignored in REVOKED. BILLABLE is emitted only when `billed_at` is unset, so at most once
(R14); an unlock the car confirms after the term already ended is never billed.

Ending (Cancel when its effective end has come, Revoke, TermEnded without renewal):

| state                                          | result                        |
|------------------------------------------------|-------------------------------|
| PENDING, FAILED (nothing reached the car)      | REVOKED [REVOKED]             |
| DELIVERY_DUE, DELIVERED, ACTIVE, UNLOCK_PENDING, UNLOCKED | REVOKE_PENDING [REVOKE_DUE] |
| REVOKE_PENDING, REVOKED                        | -                             |

Cancel applies terms.cancel_terms: [CANCELLED] (or [WITHDRAWN] for R15), auto-renew off, and
ends now if the effective end has come; a refusal raises CancelRefused; a second cancel is a
no-op. TermEnded before the term end is an error; with auto-renew it renews [RENEWED ...].
"""

from __future__ import annotations

from dataclasses import replace
from typing import assert_never

from gateway.entitlements.domain import terms
from gateway.entitlements.domain.types import (
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
    Revoke,
    TermEnded,
    TransitionError,
    Trigger,
)

S = EntitlementState
K = LifecycleEventKind


Result = tuple[Entitlement, list[LifecycleEvent]]


def _event(
    e: Entitlement,
    kind: LifecycleEventKind,
    now: float,
    reason: str = "",
    effective_end: float | None = None,
) -> LifecycleEvent:
    return LifecycleEvent(
        kind=kind,
        entitlement_id=e.entitlement_id,
        vin=e.vin,
        product_id=e.product_id,
        at=now,
        reason=reason,
        effective_end=effective_end,
    )


def _illegal(e: Entitlement, trigger: Trigger) -> TransitionError:
    return TransitionError(
        "illegal_transition",
        f"{type(trigger).__name__} is not legal for {e.kind} {e.entitlement_id} in {e.state}",
    )


def grant(
    request: GrantRequest,
    now: float,
    *,
    is_owner: bool,
    existing: Entitlement | None = None,
) -> Result:
    """Create the entitlement for an order (R3, R8), or return `existing` for a retry of the
    same order. `existing` is what the store holds under `request.order_id`, if anything."""
    if existing is not None:
        if terms.same_order(existing, request):
            return existing, []
        raise OrderConflict("order_conflict", f"order {request.order_id!r} exists with different content")
    terms.check_request(request)
    permission = terms.can_grant(request.purchaser_role, is_owner)
    if not permission.allowed:
        raise PermissionRefused(permission.reason, permission.message)
    term_start, term_end = terms.initial_term(request)
    e = Entitlement(
        entitlement_id=terms.entitlement_id_for(request.order_id),
        request=request,
        granted_at=now,
        state=S.PENDING,
        term_start=term_start,
        term_end=term_end,
        auto_renew=request.auto_renew,
        updated_at=now,
    )
    return e, [_event(e, K.GRANTED, now)]


def transition(entitlement: Entitlement, trigger: Trigger, now: float) -> Result:
    """Apply one trigger. Raises TransitionError (illegal here) or CancelRefused (terms)."""
    e, events = _dispatch(entitlement, trigger, now)
    if events or e is not entitlement:
        e = replace(e, updated_at=now)
    return e, events


def _dispatch(e: Entitlement, trigger: Trigger, now: float) -> Result:
    match trigger:
        case BootWhileOnline():
            return _on_boot(e, trigger, now)
        case Delivered():
            return _on_delivered(e, trigger, now)
        case Acked():
            return _on_acked(e, trigger, now)
        case FodWindowOpen():
            return _on_window(e, trigger, now)
        case FodResult():
            return _on_result(e, trigger, now)
        case Cancel():
            return _on_cancel(e, trigger, now)
        case Revoke():
            if e.state.is_ending:
                return e, []
            return _end(replace(e, effective_end=now), now, trigger.reason)
        case TermEnded():
            return _on_term_ended(e, trigger, now)
        case _:
            assert_never(trigger)


def _require(e: Entitlement, trigger: Trigger, *, fod: bool) -> None:
    if e.kind.is_fod is not fod:
        raise _illegal(e, trigger)


def _on_boot(e: Entitlement, trigger: BootWhileOnline, now: float) -> Result:
    if e.kind.is_fod:
        return e, []  # FoD runs in R17 windows, not on boot
    state = e.state
    match state:
        case S.PENDING | S.DELIVERY_DUE | S.DELIVERED:
            # R13: the next boot while online brings it to the head unit; a reboot before the
            # ack means the set must go out again.
            return replace(e, state=S.DELIVERY_DUE), [_event(e, K.DELIVERY_DUE, now)]
        case S.REVOKE_PENDING:
            return e, [_event(e, K.REVOKE_DUE, now, e.end_reason)]
        case S.ACTIVE | S.REVOKED:
            return e, []
        case S.UNLOCK_PENDING | S.UNLOCKED | S.FAILED:
            raise _illegal(e, trigger)
        case _:
            assert_never(state)


def _on_delivered(e: Entitlement, trigger: Delivered, now: float) -> Result:
    _require(e, trigger, fod=False)
    state = e.state
    match state:
        case S.DELIVERY_DUE:
            return replace(e, state=S.DELIVERED), [_event(e, K.DELIVERED, now)]
        case S.DELIVERED | S.ACTIVE | S.REVOKE_PENDING | S.REVOKED:
            return e, []
        case S.PENDING | S.UNLOCK_PENDING | S.UNLOCKED | S.FAILED:
            raise _illegal(e, trigger)  # R13: nothing is published before a boot while online
        case _:
            assert_never(state)


def _on_acked(e: Entitlement, trigger: Acked, now: float) -> Result:
    _require(e, trigger, fod=False)
    state = e.state
    match state:
        case S.DELIVERY_DUE | S.DELIVERED:
            return replace(e, state=S.ACTIVE), [_event(e, K.ACTIVE, now)]
        case S.REVOKE_PENDING:
            # The car acked a set without it: delivery is revoked (R10).
            revoked = replace(e, state=S.REVOKED, ended_at=now)
            return revoked, [_event(e, K.REVOKED, now, e.end_reason)]
        case S.ACTIVE | S.REVOKED:
            return e, []
        case S.PENDING | S.UNLOCK_PENDING | S.UNLOCKED | S.FAILED:
            raise _illegal(e, trigger)
        case _:
            assert_never(state)


def _on_window(e: Entitlement, trigger: FodWindowOpen, now: float) -> Result:
    _require(e, trigger, fod=True)
    state = e.state
    match state:
        case S.PENDING | S.FAILED | S.UNLOCK_PENDING:
            return replace(e, state=S.UNLOCK_PENDING), [_event(e, K.UNLOCK_DUE, now)]
        case S.REVOKE_PENDING:
            return e, [_event(e, K.CANCEL_DUE, now, e.end_reason)]  # R17 applies to cancels too
        case S.UNLOCKED | S.REVOKED:
            return e, []
        case S.DELIVERY_DUE | S.DELIVERED | S.ACTIVE:
            raise _illegal(e, trigger)
        case _:
            assert_never(state)


def _on_result(e: Entitlement, trigger: FodResult, now: float) -> Result:
    _require(e, trigger, fod=True)
    action = trigger.action
    match action:
        case FodAction.UNLOCK:
            if trigger.success:
                return _on_unlocked(e, trigger, now)
            return _on_unlock_failed(e, trigger, now)
        case FodAction.CANCEL:
            return _on_cancel_result(e, trigger, now)
        case _:
            assert_never(action)


def _on_unlocked(e: Entitlement, trigger: FodResult, now: float) -> Result:
    first = e.unlocked_at is None
    state = e.state
    match state:
        case S.UNLOCK_PENDING | S.FAILED:
            # FAILED too: a result after a gateway-side timeout still means the car unlocked.
            unlocked = replace(e, state=S.UNLOCKED, unlocked_at=now, failures=0)
            events = [_event(e, K.UNLOCKED, now)]
            if e.billed_at is None:  # R14: billed once it is unlocked in the car, once
                unlocked = replace(unlocked, billed_at=now)
                events.append(_event(e, K.BILLABLE, now))
            return unlocked, events
        case S.UNLOCKED:
            return e, []  # duplicate result: already unlocked and billed
        case S.REVOKE_PENDING:
            # The term ended before the car confirmed: not billed; the cancel still goes out.
            if not first:
                return e, []
            return replace(e, unlocked_at=now), [_event(e, K.UNLOCKED, now, "after_end")]
        case S.REVOKED:
            if not first:
                return e, []
            # It was ended as never unlocked, but the car has it: it must be cancelled in the car.
            reopened = replace(e, state=S.REVOKE_PENDING, unlocked_at=now, ended_at=None)
            return reopened, [
                _event(e, K.UNLOCKED, now, "after_end"),
                _event(e, K.REVOKE_DUE, now, e.end_reason),
            ]
        case S.PENDING | S.DELIVERY_DUE | S.DELIVERED | S.ACTIVE:
            raise _illegal(e, trigger)
        case _:
            assert_never(state)


def _on_unlock_failed(e: Entitlement, trigger: FodResult, now: float) -> Result:
    state = e.state
    match state:
        case S.UNLOCK_PENDING:
            failed = replace(e, state=S.FAILED, failures=e.failures + 1, last_failure_at=now)
            return failed, [_event(e, K.FAILED, now, trigger.reason)]
        case S.FAILED | S.UNLOCKED | S.REVOKE_PENDING | S.REVOKED:
            return e, []  # duplicate, or late after a success: the car's success stands
        case S.PENDING | S.DELIVERY_DUE | S.DELIVERED | S.ACTIVE:
            raise _illegal(e, trigger)
        case _:
            assert_never(state)


def _on_cancel_result(e: Entitlement, trigger: FodResult, now: float) -> Result:
    state = e.state
    match state:
        case S.REVOKE_PENDING:
            if trigger.success:
                revoked = replace(e, state=S.REVOKED, ended_at=now, failures=0)
                return revoked, [_event(e, K.REVOKED, now, e.end_reason)]
            failed = replace(e, failures=e.failures + 1, last_failure_at=now)
            return failed, [_event(e, K.FAILED, now, trigger.reason)]
        case S.REVOKED:
            return e, []
        case S.PENDING | S.DELIVERY_DUE | S.DELIVERED | S.ACTIVE | S.UNLOCK_PENDING | S.UNLOCKED | S.FAILED:
            raise _illegal(e, trigger)
        case _:
            assert_never(state)


def _on_cancel(e: Entitlement, trigger: Cancel, now: float) -> Result:
    if e.state.is_ending or e.cancel_requested_at is not None:
        return e, []  # idempotent: the first accepted cancel fixed the end
    e, events = _renew_due(e, now)
    decision = terms.cancel_terms(e, now, notice_s=trigger.notice_s)
    if not decision.allowed or decision.effective_end is None:
        raise CancelRefused(decision.reason, decision.message)
    end = decision.effective_end
    e = replace(e, cancel_requested_at=now, auto_renew=False, effective_end=end)
    withdrawn = e.kind is EntitlementKind.FOD_UNLIMITED
    kind, reason = (K.WITHDRAWN, "withdrawn") if withdrawn else (K.CANCELLED, "cancelled")
    events.append(_event(e, kind, now, reason, end))
    if end <= now:
        e, ended = _end(e, now, reason)
        events.extend(ended)
    return e, events


def _on_term_ended(e: Entitlement, trigger: TermEnded, now: float) -> Result:
    if e.state.is_ending:
        return e, []
    due = terms.next_term_check_at(e)
    if due is None or now < due:
        raise TransitionError("term_not_over", f"{e.entitlement_id} has no term end due at {now} (due {due})")
    if e.auto_renew and e.effective_end is None:
        return _renew_due(e, now)  # R10: auto-renewal at the end of the term
    reason = "cancelled" if e.cancel_requested_at is not None else "term_ended"
    return _end(replace(e, effective_end=due), now, reason)


def _renew_due(e: Entitlement, now: float) -> Result:
    """Every auto-renewal due at `now` (R10), one RENEWED each (several after a long outage)."""
    events: list[LifecycleEvent] = []
    while e.auto_renew and e.effective_end is None and e.term_end is not None:
        if e.term_end > now:
            break
        e = replace(e, term_end=terms.renewed_term_end(e), renewals=e.renewals + 1)
        events.append(_event(e, K.RENEWED, now, "auto_renew", e.term_end))
    return e, events


def _end(e: Entitlement, now: float, reason: str) -> Result:
    """The entitlement's end has come: take it out of the car, or close it at once."""
    state = e.state
    match state:
        case S.PENDING | S.FAILED:
            revoked = replace(e, state=S.REVOKED, end_reason=reason, ended_at=now)
            return revoked, [_event(e, K.REVOKED, now, reason)]
        case S.DELIVERY_DUE | S.DELIVERED | S.ACTIVE | S.UNLOCK_PENDING | S.UNLOCKED:
            # The car has it, or may have it: a set without it, or a cancel in an R17 window.
            pending = replace(e, state=S.REVOKE_PENDING, end_reason=reason, failures=0)
            return pending, [_event(e, K.REVOKE_DUE, now, reason)]
        case S.REVOKE_PENDING | S.REVOKED:
            return e, []
        case _:
            assert_never(state)
