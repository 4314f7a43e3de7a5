"""Client certificates for simulated cars (``python -m load.sim --tls``): each car connects to
the broker's TLS listener with its own certificate (CN = its VIN, README "Identity"), issued on
first use from the development CA (``gateway.security.pki.issue_car``) and cached.

The cache is the simulator's own directory (default ``load/.sim-certs``, ignored by git), never
``data/pki/cars`` (that is the user's ``pki issue-car`` output). It has one subdirectory per CA
(named by the CA certificate's SHA-256 prefix): after ``make clean`` or with another data
directory the CA is new, and a certificate of the old one would fail the handshake.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import ssl
from pathlib import Path

from cryptography import x509

from gateway.security import pki

DEFAULT_CACHE = Path(__file__).resolve().parent / ".sim-certs"


class CarCertificates:
    """TLS contexts for cars, one certificate per VIN from the CA in ``pki_dir``."""

    def __init__(self, pki_dir: Path, cache_dir: Path = DEFAULT_CACHE) -> None:
        self.pki_dir = pki_dir
        ca = pki.EmbeddedPki(pki_dir).ca_cert
        try:
            der = ca.read_bytes()
        except OSError as exc:
            raise pki.PkiError(
                f"no CA certificate at {ca} ({exc.strerror}): start the gateway once "
                "(`make run`) or run `telematics-gateway pki init`, or pass --pki-dir"
            ) from None
        self.cache = cache_dir / hashlib.sha256(der).hexdigest()[:16]
        self.issued = 0  # certificates issued by this run (the rest came from the cache)

    def paths(self, vin: str) -> tuple[Path, Path]:
        """The car's certificate and key, issued now unless a valid one is cached."""
        cert, key = self.cache / f"{vin}.crt", self.cache / f"{vin}.key"
        if not (key.exists() and _valid_for_a_day(cert)):
            cert, key = pki.issue_car(self.pki_dir, vin, self.cache)
            self.issued += 1
        return cert, key

    def context(self, vin: str) -> ssl.SSLContext:
        """What the car's MQTT client connects with: it verifies the broker against the CA
        and presents its own certificate (TLS 1.2 or later)."""
        cert, key = self.paths(vin)
        context = ssl.create_default_context(cafile=str(pki.EmbeddedPki(self.pki_dir).ca_cert))
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(str(cert), str(key))
        return context


def _valid_for_a_day(cert: Path) -> bool:
    try:
        c = x509.load_pem_x509_certificate(cert.read_bytes())
    except (OSError, ValueError):
        return False
    return c.not_valid_after_utc - dt.datetime.now(dt.UTC) > dt.timedelta(days=1)
