"""Entitlements: grants, terms, FoD eligibility and the lifecycle, delivered to the cars.

The package is split by responsibility; imports point one way (wire, ledger -> domain;
engine -> all three):

- `domain/`: the pure core (types, terms, lifecycle, eligibility with R17's `fod_window`,
  offer, Explain's texts). This module re-exports its public names, and imports nothing else.
- `engine/`: `EntitlementEngine`, the one class that persists entitlements and talks to cars.
- `ledger/`: the `Ledger` protocol (`base`) and its SQLite and PostgreSQL implementations.
- `wire.py`: every conversion to and from telematics.v1 (downlinks, outbox events, API types).
- `vehicle.py`: `VehicleUpdate`, what the pipeline hands the engine.
"""

from gateway.entitlements.domain.eligibility import (
    Blocker,
    BlockerCode,
    EligibilityPolicy,
    FodWindow,
    IdleTimer,
    RetryPolicy,
    fod_blockers,
    fod_window,
    next_retry_at,
)
from gateway.entitlements.domain.lifecycle import grant, transition
from gateway.entitlements.domain.terms import (
    Permission,
    TermDecision,
    can_grant,
    ensure_same_vin,
    next_term_check_at,
    remaining_term_s,
    same_order,
)
from gateway.entitlements.domain.types import (
    Acked,
    BootWhileOnline,
    Cancel,
    CancelRefused,
    Delivered,
    Entitlement,
    EntitlementError,
    EntitlementKind,
    EntitlementState,
    FodAction,
    FodResult,
    FodWindowOpen,
    GrantRequest,
    InvalidGrant,
    LifecycleEvent,
    LifecycleEventKind,
    OrderConflict,
    PermissionRefused,
    PurchaserRole,
    Revoke,
    TermEnded,
    TransitionError,
    Trigger,
)

__all__ = [
    "Acked",
    "Blocker",
    "BlockerCode",
    "BootWhileOnline",
    "Cancel",
    "CancelRefused",
    "Delivered",
    "EligibilityPolicy",
    "Entitlement",
    "EntitlementError",
    "EntitlementKind",
    "EntitlementState",
    "FodAction",
    "FodResult",
    "FodWindow",
    "FodWindowOpen",
    "GrantRequest",
    "IdleTimer",
    "InvalidGrant",
    "LifecycleEvent",
    "LifecycleEventKind",
    "OrderConflict",
    "Permission",
    "PermissionRefused",
    "PurchaserRole",
    "RetryPolicy",
    "Revoke",
    "TermDecision",
    "TermEnded",
    "TransitionError",
    "Trigger",
    "can_grant",
    "ensure_same_vin",
    "fod_blockers",
    "fod_window",
    "grant",
    "next_retry_at",
    "next_term_check_at",
    "remaining_term_s",
    "same_order",
    "transition",
]
