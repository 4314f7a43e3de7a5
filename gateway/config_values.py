"""Parsing and checking of single configuration values (types, ranges, enums, addresses).

Each function takes the raw value (a string from the environment or a flag, or a typed TOML
value) and returns the value ``Config`` stores, or raises ``ValueError`` with a message that
does not name the key: the loader prefixes where the value came from. Messages show a value
only where it cannot be a secret (``mqtt_url`` is shown through ``redact_url`` only).
"""

from __future__ import annotations

import ipaddress
import math
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, unquote, urlsplit

from gateway.redact import redact_url

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
# MQTT 5 (3.1.1.3 / 1.5.4): a UTF-8 string is at most 65,535 bytes; a packet at most 256 MiB.
MQTT_STRING_MAX = 65_535
MQTT_PACKET_MAX = 268_435_455
_HOSTNAME = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9_]([A-Za-z0-9_-]{0,62})(\.[A-Za-z0-9_-]{1,63})*\.?$")


@dataclass(frozen=True, slots=True)
class BrokerAddress:
    host: str
    port: int
    username: str | None
    password: str | None = field(repr=False)  # never shown; see display
    display: str  # redacted: the only form of the URL that may be logged
    tls: bool = False  # mqtts://: TLS to the broker (gateway/ingress/mqtt5.py)


def _shown(raw: object) -> str:
    """A short quoted form of a value for an error message (never for a URL key)."""
    text = repr(raw)
    return text if len(text) <= 42 else text[:39] + "...'"


def as_int(raw: object) -> int:
    if isinstance(raw, bool):
        raise ValueError("expected an integer, got a boolean")
    if isinstance(raw, int):
        return raw
    if isinstance(raw, str):
        try:
            return int(raw.strip(), 10)
        except ValueError:
            raise ValueError(f"{_shown(raw)} is not an integer") from None
    raise ValueError(f"expected an integer, got {type(raw).__name__}")


def as_float(raw: object) -> float:
    if isinstance(raw, bool):
        raise ValueError("expected a number, got a boolean")
    if isinstance(raw, int | float):
        value = float(raw)
    elif isinstance(raw, str):
        try:
            value = float(raw.strip())
        except ValueError:
            raise ValueError(f"{_shown(raw)} is not a number") from None
    else:
        raise ValueError(f"expected a number, got {type(raw).__name__}")
    if not math.isfinite(value):
        raise ValueError(f"{_shown(raw)} is not a finite number")
    return value


def as_str(raw: object) -> str:
    if not isinstance(raw, str):
        raise ValueError(f"expected a string, got {type(raw).__name__}")
    return raw


def int_in(lo: int, hi: int) -> Callable[[object], int]:
    def check(raw: object) -> int:
        value = as_int(raw)
        if not lo <= value <= hi:
            raise ValueError(f"{value} is out of range {lo:,}..{hi:,}")
        return value

    return check


def seconds_in(lo: float, hi: float, *, lo_inclusive: bool = True) -> Callable[[object], float]:
    def check(raw: object) -> float:
        value = as_float(raw)
        if value > hi or value < lo or (value == lo and not lo_inclusive):
            bound = "[" if lo_inclusive else "("
            raise ValueError(f"{value:g} s is out of range {bound}{lo:g}, {hi:g}]")
        return value

    return check


def rate_in(lo: float, hi: float) -> Callable[[object], float]:
    """A rate per second in (lo, hi] (lo itself excluded: a rate of 0 would stop the car)."""

    def check(raw: object) -> float:
        value = as_float(raw)
        if not lo < value <= hi:
            raise ValueError(f"{value:g}/s is out of range ({lo:g}, {hi:g}]")
        return value

    return check


def non_empty(raw: object) -> str:
    value = as_str(raw)
    if not value.strip():
        raise ValueError("must not be empty")
    return value


def log_level(raw: object) -> str:
    value = as_str(raw).strip().upper()
    if value == "WARN":
        value = "WARNING"
    if value not in LOG_LEVELS:
        raise ValueError(f"{_shown(raw)} is not one of {', '.join(LOG_LEVELS)}")
    return value


LOG_FORMATS = ("text", "json")


def log_format(raw: object) -> str:
    value = as_str(raw).strip().lower()
    if value not in LOG_FORMATS:
        raise ValueError(f"{_shown(raw)} is not one of {', '.join(LOG_FORMATS)}")
    return value


def host(raw: object) -> str:
    value = as_str(raw)
    if not _valid_host(value):
        raise ValueError(f"{_shown(raw)} is not a host name or IP address")
    return value


def _valid_host(value: str) -> bool:
    if value.startswith("[") and value.endswith("]"):
        value = value[1:-1]
    try:
        ipaddress.ip_address(value)
        return True
    except ValueError:
        return bool(_HOSTNAME.match(value))


def loopback_host(raw: object) -> str:
    """A loopback address or ``localhost``: for a listener that authenticates nobody."""
    value = host(raw)
    bare = value.strip("[]")
    try:
        loopback = ipaddress.ip_address(bare).is_loopback
    except ValueError:
        loopback = bare.lower() in ("localhost", "localhost.")
    if not loopback:
        raise ValueError(
            f"{_shown(raw)} is not a loopback address: the plain MQTT listener is unauthenticated, "
            "so it listens on loopback only (cars on a network use the TLS listener, mqtt_tls_host)"
        )
    return value


def tls_port(raw: object) -> int:
    """A port, or 0 for none."""
    return int_in(0, 65535)(raw)


def optional_file(raw: object) -> str:
    """Empty (the default applies), or a readable file. Only the path is ever shown."""
    value = as_str(raw)
    if value and not (os.path.isfile(value) and os.access(value, os.R_OK)):
        raise ValueError(f"{_shown(raw)} is not a readable file")
    return value


def split_listen(value: str) -> tuple[str, int]:
    """``host:port`` (IPv6 in brackets) -> (host without brackets, port); port 0 = any free."""
    host_part, sep, port = value.rpartition(":")
    if not sep or not port.isascii() or not port.isdigit():
        raise ValueError(f"expected host:port, got {_shown(value)}")
    if not _valid_host(host_part) or (":" in host_part and not host_part.startswith("[")):
        raise ValueError(f"{_shown(value)}: bad host (IPv6 goes in brackets: [::1]:50051)")
    if int(port) > 65535:
        raise ValueError(f"{_shown(value)}: port {int(port)} is out of range 0..65535")
    return host_part.strip("[]"), int(port)


def listen(raw: object) -> str:
    value = as_str(raw).strip()
    split_listen(value)
    return value


def client_id(raw: object) -> str:
    value = non_empty(raw)
    if len(value.encode()) > MQTT_STRING_MAX or any(ch.isspace() or not ch.isprintable() for ch in value):
        raise ValueError("must be printable, without spaces, at most 65,535 bytes")
    return value


def shared_group(raw: object) -> str:
    value = as_str(raw)
    # MQTT 5 4.8.2: a ShareName must not contain "/", "+" or "#".
    if any(ch in value for ch in "/+#") or any(ch.isspace() for ch in value):
        raise ValueError(f"{_shown(raw)} must not contain '/', '+', '#' or spaces")
    return value


def executable(raw: object) -> str:
    value = as_str(raw)
    # Empty: found on PATH (or /usr/sbin). A set path must be used, not silently replaced by
    # whatever mosquitto the PATH has.
    if value and not (os.path.isfile(value) and os.access(value, os.X_OK)):
        raise ValueError(f"{_shown(raw)} is not an executable file")
    return value


def mqtt_url(raw: object) -> str:
    value = as_str(raw).strip()
    if value:
        parse_mqtt_url(value)
    return value


def parse_mqtt_url(url: str) -> BrokerAddress:
    shown = redact_url(url)  # every message below names the URL only in this form
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise ValueError(f"bad host or port in {shown!r} (port 1..65535)") from None
    if parts.scheme not in ("mqtt", "tcp", "mqtts"):
        raise ValueError(f"scheme must be mqtt:// or mqtts:// (got {shown!r})")
    if not parts.hostname:
        raise ValueError(f"no host in {shown!r}")
    if port == 0:
        raise ValueError(f"bad port in {shown!r} (port 1..65535)")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError(f"unexpected path, query or fragment in {shown!r}")
    user = unquote(parts.username) if parts.username else None
    password = unquote(parts.password) if parts.password else None
    tls = parts.scheme == "mqtts"
    return BrokerAddress(parts.hostname, port or (8883 if tls else 1883), user, password, shown, tls)


# Connection parameters a store_url may carry in its query (libpq names that asyncpg reads).
# Not `password`: a password belongs in the userinfo, the one place every message redacts.
STORE_URL_PARAMS = frozenset({
    "host", "port", "sslmode", "sslrootcert", "sslcert", "sslkey", "sslpassword_file",
    "application_name", "connect_timeout", "target_session_attrs", "passfile", "server_settings",
})


def store_url(raw: object) -> str:
    """Empty (the embedded SQLite files in data_dir), or ``postgresql://user@host:port/db``."""
    value = as_str(raw).strip()
    if value:
        check_store_url(value)
    return value


def check_store_url(url: str) -> None:
    shown = redact_url(url)  # every message below names the URL only in this form
    try:
        parts = urlsplit(url)
        _port = parts.port
        query = parse_qsl(parts.query, keep_blank_values=True, strict_parsing=bool(parts.query))
    except ValueError:
        raise ValueError(f"bad host, port or query in {shown!r} (port 1..65535)") from None
    if parts.scheme not in ("postgresql", "postgres"):
        raise ValueError(f"scheme must be postgresql:// (got {shown!r}; empty: SQLite in data_dir)")
    keys = {k for k, _v in query}
    if not parts.hostname and "host" not in keys:
        raise ValueError(f"no host in {shown!r} (a Unix socket: postgresql://user@/db?host=/run/postgresql)")
    if _port == 0:
        raise ValueError(f"bad port in {shown!r} (port 1..65535)")
    if not parts.path.strip("/"):
        raise ValueError(f"no database name in {shown!r} (postgresql://user@host:5432/gateway)")
    if parts.fragment:
        raise ValueError(f"unexpected fragment in {shown!r}")
    unknown = sorted(keys - STORE_URL_PARAMS)
    if unknown:
        # The keys only: a value may be a secret (a password given as ?password=...).
        raise ValueError(
            f"unsupported parameter {', '.join(unknown)} in the query of {redact_url(url.split('?')[0])!r}"
            " (a password goes in the userinfo: postgresql://user:password@host/db)"
        )


def optional_path(raw: object) -> str:
    """A file path, or empty for "not set". Existence is checked when the file is read at
    start, so the error names what the file is for."""
    return as_str(raw).strip()


def grpc_credentials(raw: object) -> str:
    """``id=scope,scope=hmac-sha256$salt$digest`` entries separated by ``;`` (hashes only,
    gateway/security/credentials.py). Messages name the entry number, never its hash."""
    from gateway.security.credentials import CredentialError, parse_entries

    value = as_str(raw).strip()
    try:
        parse_entries(value)
    except CredentialError as exc:
        raise ValueError(str(exc)) from None
    return value


def is_loopback_listen(value: str) -> bool:
    """True when ``host:port`` listens on loopback only (127.0.0.0/8, ::1 or localhost)."""
    host_part, _port = split_listen(value)
    if host_part == "localhost":
        return True
    try:
        return ipaddress.ip_address(host_part).is_loopback
    except ValueError:
        return False  # another host name: may resolve to anything


# -- the telemetry sink (README "Telemetry sinks") --------------------------------------------

TELEMETRY_SINKS = ("grpc", "jetstream")


def telemetry_sink(raw: object) -> str:
    value = as_str(raw).strip().lower()
    if value not in TELEMETRY_SINKS:
        raise ValueError(f"{_shown(raw)} is not one of {', '.join(TELEMETRY_SINKS)}")
    return value


def nats_url(raw: object) -> str:
    """Empty, or ``nats://[user:password@]host[:port]`` (``tls://`` for TLS): shown redacted."""
    value = as_str(raw).strip()
    if not value:
        return value
    shown = redact_url(value)
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError:
        raise ValueError(f"bad host or port in {shown!r} (port 1..65535)") from None
    if parts.scheme not in ("nats", "tls"):
        raise ValueError(f"scheme must be nats:// or tls:// (got {shown!r})")
    if not parts.hostname or port == 0:
        raise ValueError(f"no host, or port 0, in {shown!r}")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError(f"unexpected path, query or fragment in {shown!r}")
    return value


_NATS_TOKEN = re.compile(r"[A-Za-z0-9_-]{1,64}")


def stream_name(raw: object) -> str:
    # JetStream stream names become file and subject tokens: no '.', '*', '>', separators.
    value = as_str(raw).strip()
    if not _NATS_TOKEN.fullmatch(value):
        raise ValueError(f"{_shown(raw)} must be 1..64 of A-Z a-z 0-9 _ -")
    return value


def subject_prefix(raw: object) -> str:
    # Records go to <prefix>.<VIN>: tokens only, no wildcards (they would match other subjects).
    value = as_str(raw).strip()
    if len(value) > 128 or not all(_NATS_TOKEN.fullmatch(t) for t in value.split(".")):
        raise ValueError(f"{_shown(raw)} must be dot-separated tokens of A-Z a-z 0-9 _ - (at most 128)")
    return value
