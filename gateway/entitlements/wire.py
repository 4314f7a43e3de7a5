"""Conversions between the entitlement domain and telematics.v1, in one place.

- To the car: the downlinks the engine publishes (Downlink: EntitlementSet, FodCommand) and
  the FoD action of the car's FodResult.
- To the backend: outbox events (EntitlementEvent), entitlements (Entitlement), grant requests
  (GrantRequest, the other way) and Explain's answers (EntitlementExplanation). The API
  handlers in gateway/api/ call these and stay thin.

Only the backend-facing lifecycle kinds reach the outbox; the "..._due" kinds are instructions
to the engine itself (publish a set, send a command) and never leave the gateway. The domain
enums are string enums, so each has an explicit table here; a test checks that every domain
value has a wire value and back.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from gateway._gen.telematics.v1 import downlink_pb2, explain_pb2, uplink_pb2
from gateway._gen.telematics.v1 import entitlements_pb2 as pb
from gateway.convert import seconds, timestamp
from gateway.entitlements.domain.explain import EntitlementBlocker
from gateway.entitlements.domain.terms import remaining_term_s
from gateway.entitlements.domain.types import (
    Entitlement,
    EntitlementKind,
    EntitlementState,
    FodAction,
    GrantRequest,
    InvalidGrant,
    LifecycleEvent,
    LifecycleEventKind,
    PurchaserRole,
)

K = LifecycleEventKind

EVENT_KINDS: dict[LifecycleEventKind, pb.EntitlementEventKind.ValueType] = {
    K.GRANTED: pb.ENTITLEMENT_EVENT_KIND_GRANTED,
    K.DELIVERED: pb.ENTITLEMENT_EVENT_KIND_DELIVERED,
    K.ACTIVE: pb.ENTITLEMENT_EVENT_KIND_ACTIVE,
    K.UNLOCKED: pb.ENTITLEMENT_EVENT_KIND_UNLOCKED,
    K.BILLABLE: pb.ENTITLEMENT_EVENT_KIND_BILLABLE,
    K.FAILED: pb.ENTITLEMENT_EVENT_KIND_FAILED,
    K.CANCELLED: pb.ENTITLEMENT_EVENT_KIND_CANCELLED,
    K.WITHDRAWN: pb.ENTITLEMENT_EVENT_KIND_WITHDRAWN,
    K.RENEWED: pb.ENTITLEMENT_EVENT_KIND_RENEWED,
    K.REVOKED: pb.ENTITLEMENT_EVENT_KIND_REVOKED,
}

OUTBOX_KINDS = frozenset(EVENT_KINDS)

FOD_ACTIONS: dict[FodAction, uplink_pb2.FodAction.ValueType] = {
    FodAction.UNLOCK: uplink_pb2.FOD_ACTION_UNLOCK,
    FodAction.CANCEL: uplink_pb2.FOD_ACTION_REVOKE,
}


def outbox_events(events: Iterable[LifecycleEvent]) -> list[LifecycleEvent]:
    """The events the backend sees, in order."""
    return [e for e in events if e.kind in OUTBOX_KINDS]


def event_to_proto(event: LifecycleEvent) -> pb.EntitlementEvent:
    """The outbox payload (no cursor: the outbox row assigns it)."""
    msg = pb.EntitlementEvent(
        kind=EVENT_KINDS[event.kind],
        entitlement_id=event.entitlement_id,
        vin=event.vin,
        product_id=event.product_id,
        at=timestamp(event.at),
        reason=event.reason,
    )
    if event.effective_end is not None:
        msg.effective_end.CopyFrom(timestamp(event.effective_end))
    return msg


def fod_action_from_proto(action: uplink_pb2.FodAction.ValueType) -> FodAction | None:
    for domain, wire in FOD_ACTIONS.items():
        if wire == action:
            return domain
    return None


def valid_until(e: Entitlement) -> float | None:
    """What the car is told about the end: a decided end, or the end of a term that does not
    renew. An auto-renewing term is sent without an end: the gateway sends a new set without
    it when the term really ends (R10), so the car never drops a renewed service early."""
    if e.effective_end is not None:
        return e.effective_end
    return None if e.auto_renew else e.term_end


def entitlement_set(
    vin: str, version: int, entitlements: Iterable[Entitlement], now: float
) -> downlink_pb2.Downlink:
    """The complete set of services the car should offer (R13); the car replaces its own."""
    items = []
    for e in entitlements:
        item = downlink_pb2.EntitlementItem(entitlement_id=e.entitlement_id, service_id=e.product_id)
        end = valid_until(e)
        if end is not None:
            item.valid_until.CopyFrom(timestamp(end))
        items.append(item)
    return downlink_pb2.Downlink(
        vin=vin,
        sent_at=timestamp(now),
        entitlement_set=downlink_pb2.EntitlementSet(version=version, items=items),
    )


def fod_command(
    vin: str, command_id: str, e: Entitlement, action: FodAction, now: float
) -> downlink_pb2.Downlink:
    """Unlock or revoke one function; sent only while R17's preconditions hold."""
    return downlink_pb2.Downlink(
        vin=vin,
        sent_at=timestamp(now),
        fod_command=downlink_pb2.FodCommand(
            command_id=command_id,
            entitlement_id=e.entitlement_id,
            function_id=e.product_id,
            action=FOD_ACTIONS[action],
        ),
    )


# -- the backend's entitlements, grants and explanations -------------------------------------

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
