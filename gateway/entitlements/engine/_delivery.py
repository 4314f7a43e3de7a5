"""Delivery decisions of the engine, as pure functions over entitlements and what the ledger
knows about a VIN's sets and commands: when a new entitlement set is needed and what it holds
(R10, R13), what an ack means, and when an FoD command may go out (R17, R18).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable

from gateway.entitlements.domain.eligibility import RetryPolicy, next_retry_at
from gateway.entitlements.domain.types import (
    Acked,
    Delivered,
    Entitlement,
    EntitlementState,
    FodAction,
    Trigger,
)
from gateway.entitlements.ledger.base import CommandRecord, VehicleSets

S = EntitlementState

# Services in these states are in the car, or must be: every set carries them.
IN_SET = frozenset({S.DELIVERY_DUE, S.DELIVERED, S.ACTIVE})
# Services in these states make the engine look at the VIN's set on every tick.
SET_WORK = frozenset({S.DELIVERY_DUE, S.REVOKE_PENDING})
# FoD in these states wait for an R17 window.
FOD_WORK = frozenset({S.PENDING, S.UNLOCK_PENDING, S.FAILED, S.REVOKE_PENDING})


def services(entitlements: Iterable[Entitlement]) -> list[Entitlement]:
    return [e for e in entitlements if not e.kind.is_fod]


def set_members(entitlements: Iterable[Entitlement]) -> list[Entitlement]:
    """The complete set for the car: every service it has or is due to get (R13); ending ones
    are left out, which is how the car is told to drop them (R10)."""
    return [e for e in services(entitlements) if e.state in IN_SET]


def needs_set(entitlements: Iterable[Entitlement], sets: VehicleSets, *, forced: bool) -> bool:
    """True when a new set version must be published to the VIN.

    A service due for delivery needs one. An ending service needs one unless a set without it
    is already on its way (published, not acked yet): the ack of that set ends it.
    """
    if forced:
        return True
    for e in services(entitlements):
        if e.state is S.DELIVERY_DUE:
            return True
        if e.state is S.REVOKE_PENDING:
            in_flight_without_it = (
                sets.published > 0
                and e.entitlement_id not in sets.published_ids
                and sets.acked < sets.published
            )
            if not in_flight_without_it:
                return True
    return False


def ack_triggers(
    entitlements: Iterable[Entitlement],
    version: int,
    set_ids: Collection[str],
    installed: Collection[str],
    sets: VehicleSets,
) -> list[tuple[Entitlement, list[Trigger]]]:
    """What the car's ack of set `version` means for each of the VIN's services.

    set_ids: what the ledger recorded for that version (authoritative).
    installed: the ids the car reports as installed (equal to set_ids when it lists none).
    A service in the set and installed becomes ACTIVE (DELIVERED first, if the ack overtook
    the publish bookkeeping). An ending service is gone once the car acks the newest set,
    and that set does not hold it.
    """
    out: list[tuple[Entitlement, list[Trigger]]] = []
    newest = version >= sets.published
    for e in services(entitlements):
        eid = e.entitlement_id
        if e.state in (S.DELIVERY_DUE, S.DELIVERED) and eid in set_ids and eid in installed:
            triggers: list[Trigger] = [Delivered(), Acked()] if e.state is S.DELIVERY_DUE else [Acked()]
            out.append((e, triggers))
        elif e.state is S.REVOKE_PENDING and newest and eid not in set_ids:
            out.append((e, [Acked()]))
    return out


def fod_action(e: Entitlement) -> FodAction:
    """The command an FoD waits for: a cancel once its end is decided, else an unlock."""
    return FodAction.CANCEL if e.state is S.REVOKE_PENDING else FodAction.UNLOCK


def retry_at(e: Entitlement, eligible_at: float | None, policy: RetryPolicy) -> float | None:
    """R18: after a failure, not before the backoff and not before an eligible window."""
    if e.failures <= 0 or e.last_failure_at is None:
        return None
    return next_retry_at(e.failures, e.last_failure_at, eligible_at=eligible_at, policy=policy)


def command_due(
    e: Entitlement,
    last: CommandRecord | None,
    now: float,
    *,
    eligible_at: float | None,
    ack_timeout_s: float,
    policy: RetryPolicy,
) -> bool:
    """May an FoD command for `e` go out now? The caller has checked the R17 window.

    Not while the backoff after a failure runs (R18), and not while the previous command of
    the same kind is unanswered, unless it went unanswered for `ack_timeout_s` or a new R17
    window opened after it was sent. The second case is a command lost with the link: a car
    that went away and came back (which restarts the idle wait) cannot answer a command it
    never received, and waiting out the ack timeout would delay the unlock by that much.
    """
    if e.state not in FOD_WORK:
        return False
    at = retry_at(e, eligible_at, policy)
    if at is not None and now < at:
        return False
    if last is not None and last.result_at is None and last.action is fod_action(e):
        window_reopened = eligible_at is not None and eligible_at > last.sent_at
        return window_reopened or now - last.sent_at >= ack_timeout_s
    return True
