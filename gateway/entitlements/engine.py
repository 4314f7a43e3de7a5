"""The entitlement engine: the pure lifecycle (lifecycle.py) made durable in a Ledger, driven by
vehicle updates and time (runtime.EngineCore), and by the backend API below.

- Services (R12, R13): PENDING until a boot while online in a country where the service is
  offered, then a new complete EntitlementSet; ACTIVE when the car acks a version holding it.
- FoD (R14, R17, R18): a command in an R17 window, one BILLABLE event with the car's first
  confirmed unlock, retries with backoff after a failure.
- Terms (R10, R15, R16): renewals and ends at their time; an end sends a set without the
  service, or an FoD revoke command under the same R17 preconditions.

Backend calls return only once their change and its outbox events are committed.
"""

from __future__ import annotations

import builtins
from collections.abc import Callable
from dataclasses import replace
from typing import assert_never

from gateway.entitlements import delivery, wire
from gateway.entitlements.explain import (
    EntitlementBlocker,
    explain_fod,
    explain_service,
    not_offered_for_model,
)
from gateway.entitlements.ledger import DuplicateOrder
from gateway.entitlements.lifecycle import grant as grant_order
from gateway.entitlements.runtime import Batch, EngineCore
from gateway.entitlements.types import (
    Cancel,
    Entitlement,
    EntitlementError,
    EntitlementKind,
    EntitlementState,
    FodAction,
    GrantRequest,
    Revoke,
)
from gateway.entitlements.vehicle import VehicleUpdate
from gateway.model import VehicleSession

__all__ = ["EntitlementEngine", "NotFound", "VehicleUpdate"]

S = EntitlementState

ACCOUNT_DELETED = "account_deleted"

Explained = tuple[Entitlement, list[EntitlementBlocker]]


class NotFound(EntitlementError):
    """No entitlement has that id."""


def cancel_rule(kind: EntitlementKind) -> str:
    """The rule that decided a cancellation's effective end."""
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


class EntitlementEngine(EngineCore):
    """See the module docstring; the constructor's parameters are EngineCore's."""

    # -- backend API ------------------------------------------------------------------------------

    async def grant(
        self,
        request: GrantRequest,
        *,
        booked_at_given: bool = True,
        check: Callable[[GrantRequest, VehicleSession | None], None] | None = None,
    ) -> Entitlement:
        """Grant an order, idempotently by order id (R3, R8). Durable when it returns.

        booked_at_given=False: the caller defaulted `booked_at` to now; a retry of a known order
        then takes the stored booking time instead of conflicting with it.
        check: validates a new order against the product catalogue with the car's current
            session (offer.check_grant); not called for a retry of a known order, so a retry
            still returns the entitlement granted first.
        Raises InvalidGrant, PermissionRefused (R3), OrderConflict, or what `check` raises.
        """
        async with self._lock:
            existing = self._live.by_order(request.order_id) or await self._ledger.find_by_order(
                request.order_id
            )
            if existing is not None and not booked_at_given:
                request = replace(request, booked_at=existing.booked_at)
            if existing is None and check is not None:
                check(request, self._session_of(request.vin))
            is_owner = existing is None and await self._ledger.get_owner(request.vin) == request.purchaser
            e, events = grant_order(request, self._clock.now(), is_owner=is_owner, existing=existing)
            if not events:
                return e
            try:
                written = await self._ledger.create(e, wire.outbox_events(events))
            except DuplicateOrder:
                # Another gateway instance granted it between our read and write.
                stored = await self._ledger.find_by_order(request.order_id)
                if stored is None:
                    raise
                return grant_order(request, self._clock.now(), is_owner=True, existing=stored)[0]
            self._remember(e)
            self._written(written)
        self._wake.set()
        return e

    async def cancel(
        self, entitlement_id: str, notice_s: float = 0.0
    ) -> tuple[Entitlement, float | None, str]:
        """Customer cancellation or withdrawal (R10, R15, R16): (entitlement, effective end, rule).
        A second cancel returns the first one's end. Raises NotFound or CancelRefused."""
        async with self._lock:
            e = await self._find(entitlement_id)
            batch = Batch()
            e = self._apply(batch, e, Cancel(notice_s=notice_s), self._clock.now())
            await self._commit(batch)
        self._wake.set()
        return e, e.effective_end, cancel_rule(e.kind)

    async def revoke(self, entitlement_id: str, reason: str) -> Entitlement:
        """End it now whatever the terms; the car drops it (a set without it, or an FoD revoke)."""
        async with self._lock:
            e = await self._find(entitlement_id)
            batch = Batch()
            e = self._apply(batch, e, Revoke(reason or "revoked"), self._clock.now())
            await self._commit(batch)
        self._wake.set()
        return e

    async def get(self, entitlement_id: str) -> Entitlement:
        return self._live.get(entitlement_id) or await self._find(entitlement_id)

    async def set_owner(self, vin: str, owner: str) -> None:
        """R3: the primary user, the only one who may buy for the vehicle. A sale changes it;
        entitlements stay with the vehicle (R8)."""
        await self._ledger.set_owner(vin, owner)

    async def delete_account(self, account: str) -> list[str]:
        """R4: stop delivery for the account's vehicles (see `stops_with_account`), then unlink
        them. Returns their VINs. Idempotent: a retry after a crash finishes the job.

        Entitlements the account bought for vehicles it no longer owns stay with those vehicles
        (R8: on a sale, the new holder keeps the remaining term).
        """
        async with self._lock:
            vins = await self._ledger.owned_vins(account)
            batch = Batch()
            for vin in vins:
                for e in self._view_vin(batch, vin):
                    if stops_with_account(e):
                        self._apply(batch, e, Revoke(ACCOUNT_DELETED), self._clock.now())
            await self._commit(batch)
            deleted = await self._ledger.delete_account(account, self._clock.now())
        self._wake.set()
        return deleted

    # -- explain ----------------------------------------------------------------------------------

    def explain(self, vin: str, lang: str) -> list[Explained]:
        """Why each entitlement of the VIN that is not in the car yet (or still has to leave it)
        is held back, with the driver's next step in `lang` ("en" or "de"). An empty blocker
        list means it is on its way."""
        now = self._clock.now()
        session = self._session_of(vin)
        out: list[Explained] = []
        for e in self._live.of_vin(vin):
            if e.state in (S.ACTIVE, S.UNLOCKED):
                continue
            if not e.kind.is_fod:
                available = self._available(session, e.product_id) if session is not None else (True, "")
                blockers = explain_service(
                    e, session, available=available, ack_overdue=self._sets.is_overdue(vin), lang=lang
                )
            else:
                eligible_at = self._idle.eligible_at(vin)
                r17 = (
                    self._idle.blockers(session, now, link_good=self._link_good(session))
                    if session is not None
                    else []
                )
                blockers = explain_fod(
                    e,
                    r17,
                    now=now,
                    idle_s=self._idle.policy.idle_s,
                    retry_at=delivery.retry_at(e, eligible_at, self._retry),
                    retry_steps=self._retry_steps(session, lang) if session is not None else (),
                    lang=lang,
                )
                if session is None:
                    blockers.insert(0, EntitlementBlocker("never_connected", "R17", _never_connected(lang)))
            if session is not None and _waits_for_delivery(e):
                offered, _reason = self._offered_for_model(session, e.product_id)
                if not offered:
                    blockers.insert(0, not_offered_for_model(e, session, lang))
            out.append((e, blockers))
        return out

    # -- helpers ----------------------------------------------------------------------------------

    async def _find(self, entitlement_id: str) -> Entitlement:
        e = self._live.get(entitlement_id) or await self._ledger.get(entitlement_id)
        if e is None:
            raise NotFound("not_found", f"no entitlement {entitlement_id!r}")
        return e

    # Last in the class: after it, `list` in annotations would name this method.
    async def list(self, vin: str, include_ended: bool) -> builtins.list[Entitlement]:
        """The VIN's entitlements in grant order; REVOKED ones only with include_ended."""
        return await self._ledger.list(vin, include_ended)


def _waits_for_delivery(e: Entitlement) -> bool:
    """Not in the car yet, and the catalogue's model check holds it back (runtime._on_boot and
    _open_fod_windows): a pending service, or an FoD still to be unlocked."""
    if e.kind.is_fod:
        return delivery.fod_action(e) is FodAction.UNLOCK
    return e.state is S.PENDING


def _never_connected(lang: str) -> str:
    if lang == "de":
        return "Das Fahrzeug war noch nie mit dem Gateway verbunden; verbinden Sie es mit dem Internet."
    return "The vehicle has never connected to the gateway; connect it to the internet."
