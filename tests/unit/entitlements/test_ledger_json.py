"""The ledger's JSON form of an entitlement: the text stored before (``dataclasses.asdict``),
byte for byte, so rows written by older gateways and newer ones compare and read alike."""

from __future__ import annotations

import json
from dataclasses import asdict, replace

import pytest
from engine_harness import at, order

from gateway.entitlements import Entitlement, EntitlementKind, EntitlementState, grant
from gateway.entitlements.ledger.sqlite_rows import entitlement_from_json, entitlement_to_json

NOW = at(2026, 3, 1, 10)


def variants() -> list[Entitlement]:
    out = []
    for kind in EntitlementKind:
        changes = {"term_months": 12, "auto_renew": True} if kind is EntitlementKind.FIXED_TERM else {}
        e, _ = grant(order(kind, **changes), NOW, is_owner=True)
        out.append(e)
        out.append(replace(e, state=EntitlementState.REVOKED, failures=3, last_failure_at=NOW + 1.5,
                           billed_at=NOW + 2, effective_end=NOW + 3, end_reason="withdrawn \u00e9",
                           ended_at=NOW + 4, renewals=2, cancel_requested_at=NOW + 0.25, updated_at=NOW + 5))
    return out


@pytest.mark.parametrize("e", variants(), ids=lambda e: f"{e.kind.value}-{e.state.value}")
def test_the_json_is_the_text_asdict_gave_and_reads_back_equal(e: Entitlement) -> None:
    text = entitlement_to_json(e)
    assert text == json.dumps(asdict(e), separators=(",", ":"), sort_keys=True)
    assert entitlement_from_json(text) == e
