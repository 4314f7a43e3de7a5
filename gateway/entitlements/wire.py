"""What the engine writes on the wire: outbox events (telematics.v1.EntitlementEvent) and the
downlinks to the car (telematics.v1.Downlink: EntitlementSet, FodCommand).

Only the backend-facing lifecycle kinds reach the outbox; the "..._due" kinds are instructions
to the engine itself (publish a set, send a command) and never leave the gateway.
"""

from __future__ import annotations

from collections.abc import Iterable

from gateway._gen.telematics.v1 import downlink_pb2, entitlements_pb2, uplink_pb2
from gateway.convert import timestamp
from gateway.entitlements.types import Entitlement, FodAction, LifecycleEvent, LifecycleEventKind

K = LifecycleEventKind
_PK = entitlements_pb2

EVENT_KINDS: dict[LifecycleEventKind, entitlements_pb2.EntitlementEventKind.ValueType] = {
    K.GRANTED: _PK.ENTITLEMENT_EVENT_KIND_GRANTED,
    K.DELIVERED: _PK.ENTITLEMENT_EVENT_KIND_DELIVERED,
    K.ACTIVE: _PK.ENTITLEMENT_EVENT_KIND_ACTIVE,
    K.UNLOCKED: _PK.ENTITLEMENT_EVENT_KIND_UNLOCKED,
    K.BILLABLE: _PK.ENTITLEMENT_EVENT_KIND_BILLABLE,
    K.FAILED: _PK.ENTITLEMENT_EVENT_KIND_FAILED,
    K.CANCELLED: _PK.ENTITLEMENT_EVENT_KIND_CANCELLED,
    K.WITHDRAWN: _PK.ENTITLEMENT_EVENT_KIND_WITHDRAWN,
    K.RENEWED: _PK.ENTITLEMENT_EVENT_KIND_RENEWED,
    K.REVOKED: _PK.ENTITLEMENT_EVENT_KIND_REVOKED,
}

OUTBOX_KINDS = frozenset(EVENT_KINDS)

FOD_ACTIONS: dict[FodAction, uplink_pb2.FodAction.ValueType] = {
    FodAction.UNLOCK: uplink_pb2.FOD_ACTION_UNLOCK,
    FodAction.CANCEL: uplink_pb2.FOD_ACTION_REVOKE,
}


def outbox_events(events: Iterable[LifecycleEvent]) -> list[LifecycleEvent]:
    """The events the backend sees, in order."""
    return [e for e in events if e.kind in OUTBOX_KINDS]


def event_to_proto(event: LifecycleEvent) -> entitlements_pb2.EntitlementEvent:
    """The outbox payload (no cursor: the outbox row assigns it)."""
    msg = entitlements_pb2.EntitlementEvent(
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
