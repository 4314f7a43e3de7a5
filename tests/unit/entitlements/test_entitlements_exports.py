"""The package's public surface is deliberate: a change to it must change this test."""

from __future__ import annotations

import gateway.entitlements as entitlements

EXPECTED = {
    # types
    "Entitlement", "EntitlementKind", "EntitlementState", "FodAction", "GrantRequest",
    "LifecycleEvent", "LifecycleEventKind", "PurchaserRole",
    # triggers
    "Acked", "BootWhileOnline", "Cancel", "Delivered", "FodResult", "FodWindowOpen", "Revoke",
    "TermEnded", "Trigger",
    # errors
    "CancelRefused", "EntitlementError", "InvalidGrant", "OrderConflict", "PermissionRefused",
    "TransitionError",
    # terms
    "Permission", "TermDecision", "can_grant", "ensure_same_vin", "next_term_check_at",
    "remaining_term_s", "same_order",
    # eligibility
    "Blocker", "BlockerCode", "EligibilityPolicy", "FodWindow", "IdleTimer", "RetryPolicy",
    "fod_blockers", "fod_window", "next_retry_at",
    # lifecycle
    "grant", "transition",
}  # fmt: skip


def test_public_names_are_exactly_the_documented_ones() -> None:
    assert set(entitlements.__all__) == EXPECTED


def test_every_public_name_exists() -> None:
    for name in entitlements.__all__:
        assert hasattr(entitlements, name), name
