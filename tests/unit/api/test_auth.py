"""The permission table and the edge's decision (gateway/api/auth.py), without a server."""

from __future__ import annotations

import grpc
from google.protobuf.descriptor import FieldDescriptor
from support import gateway_services

from gateway.api.auth import (
    ANONYMOUS,
    AUDITED,
    HASHED,
    METHOD_SCOPES,
    audit_fields,
    audit_line,
    bearer_token,
    decide,
    method_name,
)
from gateway.security.credentials import SCOPES, CredentialStore, make_credential, new_token

ALL_METHODS = {
    method_name(s.full_name, m.name): m for s in gateway_services() for m in s.methods
}


def store_with(cid: str, scopes: list[str]) -> tuple[CredentialStore, str]:
    token, stored = new_token(cid)
    return CredentialStore([make_credential(cid, scopes, stored)]), token


def meta(token: str) -> list[tuple[str, str | bytes]]:
    return [("authorization", f"Bearer {token}")]


def test_every_rpc_of_every_service_has_exactly_one_scope_in_the_permission_table() -> None:
    assert set(METHOD_SCOPES) == set(ALL_METHODS), (
        f"missing: {sorted(set(ALL_METHODS) - set(METHOD_SCOPES))},"
        f" stale: {sorted(set(METHOD_SCOPES) - set(ALL_METHODS))}"
    )
    assert set(METHOD_SCOPES.values()) <= set(SCOPES)


def test_every_audited_method_is_unary_and_names_string_fields_of_its_request() -> None:
    for name, fields in AUDITED.items():
        m = ALL_METHODS[name]
        assert not m.client_streaming and not m.server_streaming, name
        for field, _how in fields:
            f = m.input_type.fields_by_name[field]
            assert f.type == FieldDescriptor.TYPE_STRING and not f.is_repeated, (name, field)


def test_the_state_changing_rpcs_of_the_issue_are_audited() -> None:
    short = {name.rsplit("/", 1)[1] for name in AUDITED}
    assert {"Grant", "Cancel", "Revoke", "DeleteAccount", "SetVehicleOwner", "SendRemoteCommand",
            "ReloadReferenceData"} <= short


def test_no_credential_is_unauthenticated_and_says_how_to_send_one() -> None:
    store, _ = store_with("a", ["admin"])
    d = decide("/telematics.v1.VehicleService/GetVehicle", [], store.verify)
    assert (d.code, d.reason, d.caller) == (grpc.StatusCode.UNAUTHENTICATED, "missing_credential", ANONYMOUS)
    assert "authorization: Bearer" in d.message


def test_malformed_unknown_and_wrong_credentials_are_unauthenticated_without_echo() -> None:
    store, token = store_with("svc", ["vehicles:read"])
    cid, secret = token.split(".")
    for bad in (
        meta(cid + "." + secret[::-1]),  # wrong secret
        meta("other." + secret),  # unknown id
        meta(secret),  # no id
        [("authorization", f"Basic {token}")],  # another scheme
        meta(token) + meta(token),  # twice
        [("authorization", token.encode())],  # binary value
    ):
        d = decide("/telematics.v1.VehicleService/GetVehicle", bad, store.verify)
        assert (d.code, d.reason) == (grpc.StatusCode.UNAUTHENTICATED, "invalid_credential"), bad
        assert secret not in d.message and secret[::-1] not in d.message


def test_wrong_scope_is_permission_denied_naming_scope_and_id_and_admin_implies_every_scope() -> None:
    store, token = store_with("reader", ["vehicles:read"])
    d = decide("/telematics.v1.EntitlementService/Grant", meta(token), store.verify)
    assert d.code == grpc.StatusCode.PERMISSION_DENIED and d.caller == "reader"
    assert "entitlements:write" in d.message and "'reader'" in d.message
    assert token.split(".")[1] not in d.message
    ok = decide("/telematics.v1.VehicleService/GetVehicle", meta(token), store.verify)
    assert ok.code is None and ok.caller == "reader"
    admin_store, admin = store_with("root", ["admin"])
    for name in METHOD_SCOPES:
        assert decide(name, meta(admin), admin_store.verify).code is None, name


def test_a_method_missing_from_the_table_is_refused_even_for_admin() -> None:
    store, admin = store_with("root", ["admin"])
    d = decide("/telematics.v1.VehicleService/NewUnlistedRpc", meta(admin), store.verify)
    assert d.code == grpc.StatusCode.PERMISSION_DENIED


def test_bearer_scheme_is_case_insensitive() -> None:
    assert bearer_token([("authorization", "bearer abc.def")]) == "abc.def"
    assert bearer_token([("authorization", "BEARER  abc.def ")]) == "abc.def"
    assert bearer_token([]) is None


def test_audit_line_quotes_values_hashes_accounts_and_clips_oversized_fields() -> None:
    from gateway._gen.telematics.v1 import entitlements_pb2 as pb

    name = "/telematics.v1.EntitlementService/DeleteAccount"
    assert dict(AUDITED[name]) == {"account": HASHED}
    fields = audit_fields(name, pb.DeleteAccountRequest(account="someone@example.com"))
    line = audit_line(name, "ops", grpc.StatusCode.OK, "ipv4:127.0.0.1:1", fields)
    assert "someone@example.com" not in line and 'account="sha256:' in line
    grant = "/telematics.v1.EntitlementService/Grant"
    hostile = pb.GrantRequest(order_id="a\naudit method=Forged", vin="V" * 999)
    forged = audit_line(grant, "x", grpc.StatusCode.OK, "p", audit_fields(grant, hostile))
    assert "\n" not in forged and len(forged) < 600
    # A refused call's request is not parsed: no fields, still one line.
    assert audit_fields(grant, None) == [("order_id", ""), ("vin", ""), ("product_id", "")]
