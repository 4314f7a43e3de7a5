"""Entitlements: the pure domain core of grants, terms, FoD eligibility and the lifecycle.

No I/O and no asyncio in what this package exports: the engine that persists entitlements and
talks to vehicles calls these functions with facts and a time. The runtime is imported from its
own modules: `engine` (EntitlementEngine, VehicleUpdate), `ledger` (the Ledger protocol) and
`ledger_sqlite` (SqliteLedger), `ledger_postgres` (PostgresLedger).
"""

from gateway.entitlements.eligibility import (
    Blocker,
    BlockerCode,
    EligibilityPolicy,
    IdleTimer,
    RetryPolicy,
    fod_blockers,
    next_retry_at,
)
from gateway.entitlements.lifecycle import grant, transition
from gateway.entitlements.terms import (
    Permission,
    TermDecision,
    can_grant,
    ensure_same_vin,
    next_term_check_at,
    remaining_term_s,
    same_order,
)
from gateway.entitlements.types import (
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
    "grant",
    "next_retry_at",
    "next_term_check_at",
    "remaining_term_s",
    "same_order",
    "transition",
]
