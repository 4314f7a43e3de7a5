"""Conversions between telematics.v1 entitlement messages and the entitlement domain types.

The domain enums are string enums, so each has an explicit table here; a test checks that every
domain value has a wire value and back. Outbox events are converted in
gateway/entitlements/wire.py (the engine writes them; the API only replays them).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from gateway._gen.telematics.v1 import entitlements_pb2 as pb
from gateway._gen.telematics.v1 import explain_pb2
from gateway.convert import seconds, timestamp
from gateway.entitlements import (
    Entitlement,
    EntitlementKind,
    EntitlementState,
    GrantRequest,
    InvalidGrant,
    PurchaserRole,
)
from gateway.entitlements.explain import EntitlementBlocker
from gateway.entitlements.terms import remaining_term_s

KINDS: dict[EntitlementKind, pb.EntitlementKind.ValueType] = {
    EntitlementKind.SERVICE: pb.ENTITLEMENT_KIND_SERVICE,
    EntitlementKind.FIXED_TERM: pb.ENTITLEMENT_KIND_FIXED_TERM,
    EntitlementKind.FOD_UNLIMITED: pb.ENTITLEMENT_KIND_FOD_UNLIMITED,
    EntitlementKind.FOD_MONTHLY: pb.ENTITLEMENT_KIND_FOD_MONTHLY,
}
STATES: dict[EntitlementState, pb.EntitlementState.ValueType] = {
    EntitlementState.PENDING: pb.ENTITLEMENT_STATE_PENDING,
    EntitlementState.DELIVERY_DUE: pb.ENTITLEMENT_STATE_DELIVERY_DUE,
    EntitlementState.DELIVERED: pb.ENTITLEMENT_STATE_DELIVERED,
    EntitlementState.ACTIVE: pb.ENTITLEMENT_STATE_ACTIVE,
    EntitlementState.UNLOCK_PENDING: pb.ENTITLEMENT_STATE_UNLOCK_PENDING,
    EntitlementState.UNLOCKED: pb.ENTITLEMENT_STATE_UNLOCKED,
    EntitlementState.FAILED: pb.ENTITLEMENT_STATE_FAILED,
    EntitlementState.REVOKE_PENDING: pb.ENTITLEMENT_STATE_REVOKE_PENDING,
    EntitlementState.REVOKED: pb.ENTITLEMENT_STATE_REVOKED,
}
ROLES: dict[PurchaserRole, pb.PurchaserRole.ValueType] = {
    PurchaserRole.OWNER: pb.PURCHASER_ROLE_OWNER,
    PurchaserRole.SECONDARY_USER: pb.PURCHASER_ROLE_SECONDARY_USER,
}
_KINDS_BACK = {v: k for k, v in KINDS.items()}
_ROLES_BACK = {v: k for k, v in ROLES.items()}


def entitlement_to_proto(e: Entitlement, now: float) -> pb.Entitlement:
    """The backend's view, with the remaining term at `now` (R11; -1 when unlimited)."""
    remaining = remaining_term_s(e, now)
    msg = pb.Entitlement(
        entitlement_id=e.entitlement_id,
        vin=e.vin,
        product_id=e.product_id,
        kind=KINDS[e.kind],
        order_id=e.order_id,
        purchaser=e.purchaser,
        purchaser_role=ROLES[e.purchaser_role],
        granted_at=timestamp(e.granted_at),
        booked_at=timestamp(e.booked_at),
        term_start=timestamp(e.term_start),
        auto_renew=e.auto_renew,
        state=STATES[e.state],
        end_reason=e.end_reason,
        remaining_term_seconds=-1 if remaining is None else int(remaining),
        failures=e.failures,
    )
    optional = (
        ("term_end", e.term_end),
        ("effective_end", e.effective_end),
        ("unlocked_at", e.unlocked_at),
        ("billed_at", e.billed_at),
    )
    for name, value in optional:
        if value is not None:
            getattr(msg, name).CopyFrom(timestamp(value))
    return msg


def grant_request_from_proto(req: pb.GrantRequest, now: float) -> tuple[GrantRequest, bool]:
    """(domain request, booked_at given). An unset booked_at means `now` (see the engine's
    `grant` for how a retry of such an order keeps its first booking time)."""
    kind = _KINDS_BACK.get(req.kind)
    if kind is None:
        raise InvalidGrant("missing_field", f"order {req.order_id!r}: kind must be set")
    role = _ROLES_BACK.get(req.purchaser_role)
    if role is None:
        raise InvalidGrant("missing_field", f"order {req.order_id!r}: purchaser_role must be set")
    given = req.HasField("booked_at")
    booked_at = seconds(req.booked_at) if given else now
    return (
        GrantRequest(
            order_id=req.order_id,
            vin=req.vin,
            product_id=req.product_id,
            kind=kind,
            purchaser=req.purchaser,
            purchaser_role=role,
            booked_at=booked_at,
            term_start=seconds(req.term_start) if req.HasField("term_start") else None,
            term_end=seconds(req.term_end) if req.HasField("term_end") else None,
            term_months=req.term_months or None,
            auto_renew=req.auto_renew,
        ),
        given,
    )


def explanations_to_proto(
    items: Iterable[tuple[Entitlement, Sequence[EntitlementBlocker]]],
) -> list[explain_pb2.EntitlementExplanation]:
    """`EntitlementEngine.explain` as ExplainResponse.entitlements."""
    return [
        explain_pb2.EntitlementExplanation(
            entitlement_id=e.entitlement_id,
            product_id=e.product_id,
            state=e.state.value,
            blockers=[explain_pb2.Blocker(code=b.code, rule=b.rule, next_step=b.next_step) for b in blockers],
        )
        for e, blockers in items
    ]
