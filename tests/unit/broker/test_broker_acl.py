"""The managed broker's ACLs with quarantined cars (gateway/broker/managed.py write_acls)."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.broker.managed import TlsListener, write_acls

A = "WP0ZZZ99ZJS300001"
B = "WP0ZZZ99ZJS300002"


def tls(tmp_path: Path) -> TlsListener:
    return TlsListener(host="127.0.0.1", port=1, cafile=tmp_path / "ca", certfile=tmp_path / "c",
                       keyfile=tmp_path / "k", gateway_identity="telematics-gateway")


def rules(path: Path) -> list[str]:
    return [line for line in path.read_text().splitlines() if line and not line.startswith("#")]


def test_quarantined_cars_are_denied_their_uplink_before_any_grant(tmp_path: Path) -> None:
    plain, tls_acl = write_acls(tmp_path, gateway_user="gateway", tls=tls(tmp_path), denied=frozenset({B, A}))
    lines = rules(plain)
    # Anonymous clients (the cars) are the lines before the first `user`: the denials are there.
    assert lines[:2] == [f"topic deny v1/vehicles/{A}/up", f"topic deny v1/vehicles/{B}/up"]
    assert lines.index("user gateway") > 2
    # On the TLS listener a car's username is its VIN: a section of its own.
    tls_lines = rules(tls_acl)
    assert tls_lines[-4:] == [f"user {A}", f"topic deny v1/vehicles/{A}/up",
                              f"user {B}", f"topic deny v1/vehicles/{B}/up"]
    assert "pattern write v1/vehicles/%u/up" in tls_lines


def test_an_empty_quarantine_leaves_the_shipped_rules_alone(tmp_path: Path) -> None:
    plain, tls_acl = write_acls(tmp_path, gateway_user="gateway", tls=tls(tmp_path), denied=frozenset({A}))
    plain, tls_acl = write_acls(tmp_path, gateway_user="gateway", tls=tls(tmp_path))
    assert not any("deny" in line for line in rules(plain) + rules(tls_acl))
    assert not list(tmp_path.glob("*.tmp"))  # written whole, by rename


@pytest.mark.parametrize("name", ["WP0ZZZ99ZJS30000\ntopic readwrite #", "short", "../x", ""])
def test_anything_but_a_vin_is_refused_so_no_rule_can_be_smuggled_in(tmp_path: Path, name: str) -> None:
    with pytest.raises(ValueError, match="not a VIN"):
        write_acls(tmp_path, gateway_user="gateway", tls=None, denied=frozenset({name}))
