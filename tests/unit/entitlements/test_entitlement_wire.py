"""Entitlement conversions: every domain value has a wire value, and requests convert back."""

from __future__ import annotations

from gateway._gen.telematics.v1 import entitlements_pb2 as pb
from gateway.api.entitlements import EngineExplainer
from gateway.api.explain import EntitlementExplainer
from gateway.entitlements import (
    EntitlementKind,
    EntitlementState,
    GrantRequest,
    LifecycleEventKind,
    PurchaserRole,
    grant,
)
from gateway.entitlements.domain.explain import EntitlementBlocker
from gateway.entitlements.wire import (
    EVENT_KINDS,
    KINDS,
    OUTBOX_KINDS,
    ROLES,
    STATES,
    entitlement_to_proto,
    explanations_to_proto,
    grant_request_from_proto,
)

VIN = "WP0ZZZ99ZTS392124"
NOW = 1_772_359_200.0  # 2026-03-01T10:00:00Z


def test_every_domain_enum_value_has_a_distinct_wire_value() -> None:
    for table, enum in ((KINDS, EntitlementKind), (STATES, EntitlementState), (ROLES, PurchaserRole)):
        assert set(table) == set(enum)
        assert len(set(table.values())) == len(table)


def test_only_backend_facing_lifecycle_kinds_reach_the_outbox() -> None:
    internal = {k for k in LifecycleEventKind if k.value.endswith("_due")}
    assert set(LifecycleEventKind) - internal == OUTBOX_KINDS
    assert len(set(EVENT_KINDS.values())) == len(pb.EntitlementEventKind.values()) - 1


def test_grant_request_round_trip_and_defaulted_booking_time() -> None:
    req = pb.GrantRequest(
        order_id="o1", vin=VIN, product_id="svc.x", kind=pb.ENTITLEMENT_KIND_FIXED_TERM,
        purchaser="a@example.com", purchaser_role=pb.PURCHASER_ROLE_OWNER, term_months=3, auto_renew=True,
    )  # fmt: skip
    order, given = grant_request_from_proto(req, NOW)
    assert not given
    assert order == GrantRequest(
        "o1", VIN, "svc.x", EntitlementKind.FIXED_TERM, "a@example.com", PurchaserRole.OWNER, NOW,
        term_months=3, auto_renew=True,
    )  # fmt: skip
    e, _ = grant(order, NOW, is_owner=True)
    msg = entitlement_to_proto(e, NOW)
    assert msg.term_end.seconds > NOW and not msg.HasField("effective_end")
    assert e.term_end is not None
    assert msg.remaining_term_seconds == int(e.term_end - NOW)


def _engine_explainer_fits_explain_service(e: EngineExplainer) -> EntitlementExplainer:
    return e  # checked by mypy: the adapter is what ExplainService takes


def test_explanations_convert_to_explain_response_entries() -> None:
    kind, role = EntitlementKind.FOD_UNLIMITED, PurchaserRole.OWNER
    order = GrantRequest("o1", VIN, "fod.led", kind, "a@x.com", role, NOW)
    e, _ = grant(order, NOW, is_owner=True)
    blocker = EntitlementBlocker("charging_cable_connected", "R17", "Disconnect the charging cable.")
    [msg] = explanations_to_proto([(e, [blocker])])
    assert (msg.entitlement_id, msg.product_id, msg.state) == (e.entitlement_id, "fod.led", "pending")
    assert [(b.code, b.rule, b.next_step) for b in msg.blockers] == [
        ("charging_cable_connected", "R17", "Disconnect the charging cable.")
    ]
