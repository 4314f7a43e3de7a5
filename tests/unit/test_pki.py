"""The development CA (gateway/security/pki.py): identities, names, validity, key files."""

from __future__ import annotations

import datetime as dt
import ipaddress
import ssl
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from gateway.security import pki

VIN = "WP0ZZZ99ZJS100001"


def load(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def cn(cert: x509.Certificate) -> str:
    return str(cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def ca(tmp_path: Path) -> Path:
    directory = tmp_path / "pki"
    assert pki.init_ca(directory)
    return directory


def test_a_car_certificate_names_the_vin_as_cn_and_is_signed_by_the_ca(ca: Path, tmp_path: Path) -> None:
    cert_path, key_path = pki.issue_car(ca, VIN, tmp_path / "cars")
    cert, ca_cert = load(cert_path), load(ca / "ca.crt")
    assert cn(cert) == VIN
    assert pki.certificate_identity(cert_path) == VIN
    assert cert.issuer == ca_cert.subject
    cert.verify_directly_issued_by(ca_cert)
    usage = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usage) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert isinstance(cert.public_key(), ec.EllipticCurvePublicKey)
    assert (tmp_path / "cars" / "ca.crt").read_bytes() == (ca / "ca.crt").read_bytes()
    # Python's TLS stack accepts the pair as a client certificate.
    ssl.create_default_context().load_cert_chain(str(cert_path), str(key_path))


@pytest.mark.parametrize(
    "vin", ["", "WP0ZZZ99ZJS10000", "WP0ZZZ99ZJS1000011", "WP0ZZZ99ZJS10000I", "wp0zzz99zjs100001",
            "WP0ZZZ99ZJS10000+", "WP0ZZZ99ZJS10000#", "WP0ZZZ99ZJS/00001"],
)
def test_a_car_certificate_is_refused_for_anything_but_a_valid_vin_and_nothing_is_written(
    ca: Path, tmp_path: Path, vin: str
) -> None:
    with pytest.raises(pki.PkiError, match="not a valid VIN"):
        pki.issue_car(ca, vin, tmp_path / "cars")
    assert not (tmp_path / "cars").exists()


def test_private_keys_are_owner_only_and_the_pki_directory_is_private(tmp_path: Path) -> None:
    files, created = pki.ensure_embedded_pki(tmp_path / "pki", gateway_identity="telematics-gateway")
    car_cert, car_key = pki.issue_car(files.directory, VIN, files.cars)
    for key in (files.ca_key, files.broker_key, files.gateway_key, car_key):
        assert mode(key) == 0o600, key
    for cert in (files.ca_cert, files.broker_cert, files.gateway_cert, car_cert):
        assert mode(cert) == 0o644, cert
    assert mode(files.directory) == 0o700
    assert created == [files.ca_cert, files.broker_cert, files.gateway_cert]
    assert not list(files.directory.glob(".*.tmp"))  # no temporary file left behind


def test_the_broker_certificate_is_a_server_certificate_for_loopback_names(ca: Path) -> None:
    pki.issue_broker(ca, pki.broker_names(["10.1.2.3"]), ca / "broker.crt", ca / "broker.key")
    cert = load(ca / "broker.crt")
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert {"localhost"} <= set(san.get_values_for_type(x509.DNSName))
    assert {ipaddress.ip_address(a) for a in ("127.0.0.1", "::1", "10.1.2.3")} <= set(
        san.get_values_for_type(x509.IPAddress)
    )
    usage = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usage) == [ExtendedKeyUsageOID.SERVER_AUTH]


def test_wildcard_listen_addresses_are_no_certificate_names() -> None:
    names = pki.broker_names(["0.0.0.0", "::"])
    assert "0.0.0.0" not in names and "::" not in names
    assert names[:3] == ["localhost", "127.0.0.1", "::1"]


def test_validity_is_the_requested_number_of_days_and_never_beyond_the_ca(ca: Path, tmp_path: Path) -> None:
    cert_path, _ = pki.issue_car(ca, VIN, tmp_path / "cars", days=30)
    cert = load(cert_path)
    now = dt.datetime.now(dt.UTC)
    assert cert.not_valid_before_utc <= now
    assert abs(cert.not_valid_after_utc - (now + dt.timedelta(days=30))) < dt.timedelta(minutes=1)
    ca_cert = load(ca / "ca.crt")
    assert ca_cert.not_valid_after_utc - now > dt.timedelta(days=pki.CA_DAYS - 1)
    with pytest.raises(pki.PkiError, match="out of range"):
        pki.issue_car(ca, VIN, tmp_path / "cars", days=0)


def test_the_ca_is_a_ca_limited_to_signing_leaf_certificates(ca: Path) -> None:
    cert = load(ca / "ca.crt")
    constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    assert constraints.ca and constraints.path_length == 0
    assert cert.extensions.get_extension_for_class(x509.KeyUsage).value.key_cert_sign


def test_the_embedded_pki_is_created_once_and_then_kept(tmp_path: Path) -> None:
    files, _ = pki.ensure_embedded_pki(tmp_path / "pki", gateway_identity="telematics-gateway")
    before = {p: p.read_bytes() for p in files.directory.iterdir() if p.is_file()}
    _, created = pki.ensure_embedded_pki(tmp_path / "pki", gateway_identity="telematics-gateway")
    assert created == []
    assert {p: p.read_bytes() for p in files.directory.iterdir() if p.is_file()} == before


def test_the_gateway_certificate_is_reissued_when_the_gateway_identity_changes(tmp_path: Path) -> None:
    files, _ = pki.ensure_embedded_pki(tmp_path / "pki", gateway_identity="telematics-gateway")
    ca_before = files.ca_cert.read_bytes()
    _, created = pki.ensure_embedded_pki(tmp_path / "pki", gateway_identity="gateway-eu-1")
    assert created == [files.gateway_cert]
    assert pki.certificate_identity(files.gateway_cert) == "gateway-eu-1"
    assert files.ca_cert.read_bytes() == ca_before  # cars issued before stay valid


@pytest.mark.parametrize("name", ["", "has space", "v1/vehicles/#", "a+b", VIN, "x" * 65])
def test_a_gateway_identity_must_be_a_plain_name_and_never_a_vin(ca: Path, tmp_path: Path, name: str) -> None:
    with pytest.raises(pki.PkiError):
        pki.issue_gateway(ca, name, tmp_path / "gateways")


def test_issuing_without_a_ca_says_how_to_create_one(tmp_path: Path) -> None:
    with pytest.raises(pki.PkiError, match="pki init"):
        pki.issue_car(tmp_path / "none", VIN, tmp_path / "cars")


def test_no_error_shows_the_contents_of_a_broken_ca_key(ca: Path, tmp_path: Path) -> None:
    (ca / "ca.key").write_text("-----BEGIN PRIVATE KEY-----\nc2VjcmV0LWJ5dGVz\n-----END PRIVATE KEY-----\n")
    with pytest.raises(pki.PkiError) as caught:
        pki.issue_car(ca, VIN, tmp_path / "cars")
    assert "c2VjcmV0" not in str(caught.value)
    assert str(ca / "ca.key") in str(caught.value)


def test_a_lost_ca_key_makes_a_new_ca_and_both_leaf_certificates_are_reissued(tmp_path: Path) -> None:
    files, _ = pki.ensure_embedded_pki(tmp_path / "pki", gateway_identity="telematics-gateway")
    files.ca_key.unlink()  # e.g. restored from a backup without the key
    files, created = pki.ensure_embedded_pki(tmp_path / "pki", gateway_identity="telematics-gateway")
    assert set(created) == {files.ca_cert, files.broker_cert, files.gateway_cert}
    ca = x509.load_pem_x509_certificate(files.ca_cert.read_bytes())
    for leaf in (files.broker_cert, files.gateway_cert):
        x509.load_pem_x509_certificate(leaf.read_bytes()).verify_directly_issued_by(ca)  # raises if not
