"""The TLS side of the gateway's own MQTT connection: which CA it trusts and which certificate
it shows, from the configuration (README "Identity")."""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path

__all__ = ["MqttTls", "MqttTlsError", "client_context"]


class MqttTlsError(Exception):
    """A CA, certificate or key file could not be loaded (the message names the path only)."""


@dataclass(frozen=True, slots=True)
class MqttTls:
    """Paths only: the key's contents never pass through here."""

    ca_file: Path | None  # None: the system's trust store
    cert_file: Path | None  # None: no client certificate (username/password, if any)
    key_file: Path | None


def client_context(tls: MqttTls) -> ssl.SSLContext:
    """A client context: TLS 1.2 or later, the broker's certificate verified against the CA
    and its name checked, the client certificate loaded when configured."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if tls.ca_file is not None:
        try:
            context.load_verify_locations(cafile=str(tls.ca_file))
        except (OSError, ssl.SSLError) as exc:
            raise MqttTlsError(f"cannot load the broker CA {tls.ca_file}: {_reason(exc)}") from None
    if tls.cert_file is not None:
        try:
            # An empty password rather than none: OpenSSL would otherwise prompt on the terminal
            # for an encrypted key and hang a service; this way it fails with a clear error.
            context.load_cert_chain(
                str(tls.cert_file), str(tls.key_file) if tls.key_file else None, password=lambda: b""
            )
        except (OSError, ssl.SSLError) as exc:
            raise MqttTlsError(
                f"cannot load the client certificate {tls.cert_file} with key {tls.key_file}: {_reason(exc)}"
            ) from None
    return context


def _reason(exc: OSError | ssl.SSLError) -> str:
    # Only the library's reason (e.g. "PEM lib", "No such file or directory"): never file contents.
    if isinstance(exc, ssl.SSLError):
        return exc.reason or "invalid"
    return exc.strerror or "unreadable"
