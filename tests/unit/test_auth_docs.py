"""The README's scope table and audit list, and the proto's error comments, say what
gateway/api/auth.py enforces: every RPC under the scope METHOD_SCOPES gives it, every scope a
row, every audited method named."""

from __future__ import annotations

import re

from metrics_catalogue import catalogue

from gateway._gen.telematics.v1 import (
    entitlements_pb2,
    explain_pb2,
    security_codes_pb2,
    telemetry_pb2,
    vehicles_pb2,
)
from gateway.api.auth import AUDITED, METHOD_SCOPES, short_name
from gateway.config import PROJECT_ROOT
from gateway.security.credentials import SCOPES


def _section(title: str) -> str:
    text = (PROJECT_ROOT / "README.md").read_text(encoding="utf-8")
    return text.split(f"\n## {title}\n", 1)[1].split("\n## ", 1)[0]


def _scope_table() -> dict[str, set[str]]:
    rows: dict[str, set[str]] = {}
    for line in _section("Backend authentication").splitlines():
        match = re.match(r"\| `([a-z_:]+)` \|(.*)\|$", line)
        if match:
            rows[match.group(1)] = set(re.findall(r"`([A-Za-z]+)`", match.group(2)))
    return rows


def test_every_rpc_is_listed_under_the_scope_the_permission_table_gives_it() -> None:
    table = _scope_table()
    assert set(table) == set(SCOPES)
    wrong = {short_name(m): scope for m, scope in METHOD_SCOPES.items() if short_name(m) not in table[scope]}
    assert not wrong, f"README scope table does not list these RPCs under their scope: {wrong}"
    listed = {rpc for rpcs in table.values() for rpc in rpcs}
    assert listed == {short_name(m) for m in METHOD_SCOPES}


def test_every_audited_method_is_named_in_the_audit_paragraph_and_the_metric_row() -> None:
    audit = _section("Backend authentication").split("**Audit.**", 1)[1].split("\n\n", 1)[0]
    metrics_row = catalogue()["gateway_audit_events_total"].labels  # docs/metrics.md
    for method in AUDITED:
        assert f"`{short_name(method)}`" in audit, short_name(method)
        assert re.search(rf"\b{short_name(method)}\b", metrics_row), short_name(method)


_NAMES_SCOPE = r"((?:[A-Z][A-Za-z]+, )*[A-Z][A-Za-z]+): ([a-z_]+:[a-z]+|admin)\b"


def _proto_scopes() -> dict[str, str]:
    """RPC -> scope as the proto comments state it ("Grant, Cancel: entitlements:write")."""
    out: dict[str, str] = {}
    for module in (entitlements_pb2, explain_pb2, security_codes_pb2, telemetry_pb2, vehicles_pb2):
        text = (PROJECT_ROOT / "proto" / module.DESCRIPTOR.name).read_text(encoding="utf-8")
        text = re.sub(r"\n//\s+", " ", text)  # comment lines joined
        for names, scope in re.findall(_NAMES_SCOPE, text):
            out.update(dict.fromkeys(names.split(", "), scope))
    return out


def test_every_rpc_s_proto_comment_names_the_scope_the_permission_table_gives_it() -> None:
    stated = _proto_scopes()
    wrong = {short_name(m): (scope, stated.get(short_name(m))) for m, scope in METHOD_SCOPES.items()
             if stated.get(short_name(m)) != scope}
    assert not wrong, f"proto comments disagree with METHOD_SCOPES (table, proto): {wrong}"
