"""A development certificate authority for the embedded broker: car, gateway and broker
certificates (EC P-256, SHA-256).

The identity model (README "Identity"): a car's certificate names its VIN as subject CN; the
broker's TLS listener takes the CN as the MQTT username and client id
(``use_identity_as_username``, ``use_username_as_clientid``), and its ACL confines a car to its
own topics by that name. The gateway's certificate names the gateway's identity, which the ACL
grants every car's uplink and downlink. Production fleets issue car certificates from the car
maker's own PKI (often at the factory, from an HSM); the same CN = VIN rule applies.

Private keys are written with mode 0600 (created so: never readable by others, not even for a
moment) and are never logged or put in an error message; only paths are shown.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import socket
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from gateway.model import is_valid_vin
from gateway.security.files import write_private

__all__ = [
    "CA_DAYS",
    "LEAF_DAYS",
    "RENEW_BEFORE_DAYS",
    "EmbeddedPki",
    "PkiError",
    "certificate_identity",
    "ensure_embedded_pki",
    "init_ca",
    "issue_broker",
    "issue_car",
    "issue_gateway",
    "load_ca",
]

CA_DAYS = 3650  # a development CA: ten years, so the embedded default never expires under a demo
LEAF_DAYS = 825  # the longest leaf lifetime browsers ever accepted; cars renew before it ends
RENEW_BEFORE_DAYS = 30  # the gateway's own and the broker's certificate are reissued this early
CA_NAME = "Telematics Gateway Development CA"
# Names the broker's server certificate always carries: the gateway and local tools connect so.
LOCAL_NAMES = ("localhost", "127.0.0.1", "::1")


class PkiError(Exception):
    """A certificate could not be issued or read (bad VIN, missing CA, unreadable file)."""


@dataclass(frozen=True, slots=True)
class EmbeddedPki:
    """The files of data_dir/pki: the CA, the broker's server and the gateway's client
    credentials. Paths only: nothing secret in a repr."""

    directory: Path

    @property
    def ca_cert(self) -> Path:
        return self.directory / "ca.crt"

    @property
    def ca_key(self) -> Path:
        return self.directory / "ca.key"

    @property
    def broker_cert(self) -> Path:
        return self.directory / "broker.crt"

    @property
    def broker_key(self) -> Path:
        return self.directory / "broker.key"

    @property
    def gateway_cert(self) -> Path:
        return self.directory / "gateway.crt"

    @property
    def gateway_key(self) -> Path:
        return self.directory / "gateway.key"

    @property
    def cars(self) -> Path:
        return self.directory / "cars"


# -- files ---------------------------------------------------------------------------------


def _write_public(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _read_cert(path: Path) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(path.read_bytes())
    except OSError as exc:
        raise PkiError(f"cannot read certificate {path}: {exc.strerror}") from None
    except ValueError:
        raise PkiError(f"{path} is not a PEM certificate") from None


def load_ca(directory: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    pki = EmbeddedPki(directory)
    if not pki.ca_cert.exists() or not pki.ca_key.exists():
        raise PkiError(
            f"no CA in {directory}: run `telematics-gateway pki init` (or start the gateway once)"
        )
    cert = _read_cert(pki.ca_cert)
    try:
        key = serialization.load_pem_private_key(pki.ca_key.read_bytes(), password=None)
    except OSError as exc:
        raise PkiError(f"cannot read CA key {pki.ca_key}: {exc.strerror}") from None
    except (ValueError, TypeError):
        # Never the key's bytes in the message: only where it is.
        raise PkiError(f"{pki.ca_key} is not an unencrypted PEM private key") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise PkiError(f"{pki.ca_key} is not an EC key")
    return cert, key


def certificate_identity(path: Path) -> str:
    """The subject CN of a PEM certificate: the identity the broker sees."""
    return _common_name(_read_cert(path))


def _common_name(cert: x509.Certificate) -> str:
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    value = names[0].value if names else ""
    return value if isinstance(value, str) else value.decode()


# -- issuing -------------------------------------------------------------------------------


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def init_ca(directory: Path, *, days: int = CA_DAYS) -> bool:
    """Create the development CA in ``directory`` unless one is there; True if created."""
    pki = EmbeddedPki(directory)
    if pki.ca_cert.exists() and pki.ca_key.exists():
        return False
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "telematics-gateway"),
        x509.NameAttribute(NameOID.COMMON_NAME, CA_NAME),
    ])
    now = _now()
    public = key.public_key()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))  # tolerate small clock skew
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
                encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .sign(key, hashes.SHA256())
    )
    write_private(pki.ca_key, _key_pem(key))  # the key first: a cert without its key is useless
    _write_public(pki.ca_cert, cert.public_bytes(serialization.Encoding.PEM))
    return True


def _issue(
    ca_dir: Path,
    common_name: str,
    cert_path: Path,
    key_path: Path,
    *,
    usage: x509.ObjectIdentifier,
    san: Sequence[x509.GeneralName] = (),
    days: int = LEAF_DAYS,
) -> None:
    if not 1 <= days <= CA_DAYS:
        raise PkiError(f"validity of {days} days is out of range 1..{CA_DAYS}")
    ca_cert, ca_key = load_ca(ca_dir)
    key = ec.generate_private_key(ec.SECP256R1())
    now = _now()
    not_after = min(now + dt.timedelta(days=days), ca_cert.not_valid_after_utc)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=False, crl_sign=False,
                encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
    )
    if san:
        builder = builder.add_extension(x509.SubjectAlternativeName(list(san)), critical=False)
    cert = builder.sign(ca_key, hashes.SHA256())
    write_private(key_path, _key_pem(key))
    _write_public(cert_path, cert.public_bytes(serialization.Encoding.PEM))


def issue_car(ca_dir: Path, vin: str, out_dir: Path, *, days: int = LEAF_DAYS) -> tuple[Path, Path]:
    """A car's client certificate: subject CN = the VIN (its MQTT identity on the TLS listener).
    Writes <VIN>.crt, <VIN>.key and the CA certificate ca.crt (the car's trust anchor) to
    ``out_dir``; returns (certificate, key)."""
    if not is_valid_vin(vin):
        # The broker's ACL puts the CN into topic names: only a well-formed VIN may be one.
        raise PkiError(f"{vin[:40]!r} is not a valid VIN (17 characters, A-Z and 0-9 without I, O, Q)")
    cert_path, key_path = out_dir / f"{vin}.crt", out_dir / f"{vin}.key"
    _issue(ca_dir, vin, cert_path, key_path, usage=ExtendedKeyUsageOID.CLIENT_AUTH, days=days)
    ca_copy = out_dir / "ca.crt"
    if ca_copy.resolve() != EmbeddedPki(ca_dir).ca_cert.resolve():
        _write_public(ca_copy, EmbeddedPki(ca_dir).ca_cert.read_bytes())
    return cert_path, key_path


def _check_identity(name: str) -> None:
    # The name becomes an MQTT username and client id and is matched in the ACL: no topic
    # wildcards or separators, no spaces, not a VIN (a gateway must never pose as a car).
    if not name or len(name) > 64 or not all(ch.isalnum() or ch in "-_." for ch in name):
        raise PkiError(f"{name[:40]!r}: an identity is 1..64 of A-Z, a-z, 0-9, '-', '_', '.'")
    if is_valid_vin(name):
        raise PkiError(f"{name!r} is a VIN: a gateway identity must not be one")


def issue_gateway(
    ca_dir: Path, name: str, out_dir: Path, *, days: int = LEAF_DAYS
) -> tuple[Path, Path]:
    """A gateway's client certificate: subject CN = ``name``. Writes <name>.crt, <name>.key."""
    _check_identity(name)
    cert_path, key_path = out_dir / f"{name}.crt", out_dir / f"{name}.key"
    _issue(ca_dir, name, cert_path, key_path, usage=ExtendedKeyUsageOID.CLIENT_AUTH, days=days)
    return cert_path, key_path


def _general_name(name: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)


def broker_names(extra: Iterable[str] = ()) -> list[str]:
    """The names the broker's certificate carries: loopback, this host's name, and ``extra``
    (a configured listener address); wildcard addresses are no names."""
    names: list[str] = []
    for name in (*LOCAL_NAMES, socket.gethostname(), *extra):
        if name and name not in ("0.0.0.0", "::") and name not in names:
            names.append(name)
    return names


def issue_broker(
    ca_dir: Path, names: Sequence[str], cert_path: Path, key_path: Path, *, days: int = LEAF_DAYS
) -> None:
    """The broker's server certificate, valid for ``names`` (subject alternative names)."""
    if not names:
        raise PkiError("a broker certificate needs at least one name")
    _issue(
        ca_dir, names[0], cert_path, key_path, usage=ExtendedKeyUsageOID.SERVER_AUTH,
        san=[_general_name(n) for n in names], days=days,
    )


# -- the embedded default ------------------------------------------------------------------


def _needs_issue(
    cert_path: Path, key_path: Path, ca: x509.Certificate, *, identity: str = "", names: Sequence[str] = ()
) -> bool:
    """Missing, not signed by the current CA (a lost CA key made a new one), expiring within
    RENEW_BEFORE_DAYS, or for another identity or other names."""
    if not cert_path.exists() or not key_path.exists():
        return True
    try:
        cert = _read_cert(cert_path)
        cert.verify_directly_issued_by(ca)
    except (PkiError, ValueError, TypeError, InvalidSignature):
        return True
    if cert.not_valid_after_utc - _now() < dt.timedelta(days=RENEW_BEFORE_DAYS):
        return True
    if identity and _common_name(cert) != identity:
        return True
    if names:
        try:
            san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        except x509.ExtensionNotFound:
            return True
        have = {str(v) for v in san.get_values_for_type(x509.DNSName)}
        have |= {str(v) for v in san.get_values_for_type(x509.IPAddress)}
        if not {str(_general_name(n).value) for n in names} <= have:
            return True
    return False


def ensure_embedded_pki(
    directory: Path, *, gateway_identity: str, broker_hosts: Iterable[str] = ()
) -> tuple[EmbeddedPki, list[Path]]:
    """The CA, the broker's server credentials and the gateway's client credentials in
    ``directory``, each created only when missing (or, for the two leaves, expiring or for
    another identity); returns the files and the list of what was created now."""
    pki = EmbeddedPki(directory)
    created: list[Path] = []
    directory.mkdir(parents=True, exist_ok=True)
    os.chmod(directory, 0o700)  # holds the CA's key
    if init_ca(directory):
        created.append(pki.ca_cert)
    ca = _read_cert(pki.ca_cert)
    names = broker_names(broker_hosts)
    if _needs_issue(pki.broker_cert, pki.broker_key, ca, names=names):
        issue_broker(directory, names, pki.broker_cert, pki.broker_key)
        created.append(pki.broker_cert)
    if _needs_issue(pki.gateway_cert, pki.gateway_key, ca, identity=gateway_identity):
        _check_identity(gateway_identity)
        _issue(
            directory, gateway_identity, pki.gateway_cert, pki.gateway_key,
            usage=ExtendedKeyUsageOID.CLIENT_AUTH,
        )
        created.append(pki.gateway_cert)
    return pki, created
