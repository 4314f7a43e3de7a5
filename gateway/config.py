"""Gateway configuration: plain data, read from a TOML file and GATEWAY_* environment variables.

Precedence: defaults < config file (``--config`` or GATEWAY_CONFIG) < environment < flags.
Every key of ``Config`` is settable both ways; the environment name is ``GATEWAY_`` + the key in
capitals. Every value is checked here (type, range, enum, address), so a bad one stops the
start with one line naming where it came from, before anything runs. An unknown key in the
TOML file is an error (the operator wrote that file for this gateway: a typo must not be
ignored); an unknown GATEWAY_* variable is a warning (the environment is shared with other
software and deployment tooling, so refusing to start would be too strict).
No factories here: wiring happens in gateway/app.py.
"""

from __future__ import annotations

import dataclasses
import difflib
import logging
import os
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from gateway import config_values as cv
from gateway.config_values import BrokerAddress
from gateway.redact import redact_url

__all__ = [
    "BrokerAddress",
    "Config",
    "ConfigError",
    "load_config",
    "parse_mqtt_url",
    "redact_url",
    "split_listen",
]

log = logging.getLogger(__name__)

PROJECT_ROOT = Path(__file__).resolve().parent.parent


class ConfigError(Exception):
    """A configuration value is missing, malformed or out of range."""


@dataclass(frozen=True, slots=True)
class Config:
    # MQTT. Empty mqtt_url: start a managed Mosquitto on mqtt_host:mqtt_port. Not in repr():
    # it may hold a password (display_url is the form to show).
    mqtt_url: str = field(default="", repr=False)
    # The managed broker's plain listener: loopback only, unauthenticated (demo, simulator).
    mqtt_host: str = "127.0.0.1"
    mqtt_port: int = 18830
    # The managed broker's TLS listener (client certificate required, CN = identity); 0: none.
    # With one, the gateway itself connects to it with its own certificate (data_dir/pki).
    mqtt_tls_host: str = "127.0.0.1"
    mqtt_tls_port: int = 18883
    # TLS to the broker (mqtts:// URLs, and the managed TLS listener): the CA to trust and the
    # gateway's client certificate and key. Empty: the managed broker's files in data_dir/pki,
    # or for an external broker the system's trust store and no client certificate.
    mqtt_ca_file: str = ""
    mqtt_cert_file: str = ""
    mqtt_key_file: str = ""
    mqtt_client_id: str = "telematics-gateway"
    # Non-empty: subscribe through $share/<group>/ so several gateways split the load.
    mqtt_shared_group: str = ""
    # With store_url and mqtt_url (several gateways on one broker): the ingest slots, client ids
    # <mqtt_client_id>-1 .. -N, each held by one gateway under a lease in PostgreSQL that is
    # renewed every third of mqtt_slot_lease_s (gateway/ingress/slots.py).
    mqtt_slots: int = 1
    mqtt_slot_lease_s: float = 15.0
    # A broker granting a shorter session expiry than this (CONNACK) is a /readyz warning:
    # a gateway away longer loses what cars sent meanwhile (gateway/ingress/broker_grants.py).
    mqtt_session_expiry_warn_s: float = 3600.0
    mosquitto_bin: str = ""  # empty: found on PATH or in /usr/sbin
    # Store. Empty store_url: SQLite files in data_dir; postgresql://user@host:port/db: that
    # PostgreSQL database (README "PostgreSQL"). Not in repr(): it may hold a password.
    data_dir: str = "data"
    store_url: str = field(default="", repr=False)
    # PostgreSQL only: the limit of every statement (one that hangs counts as the database being
    # unavailable) and the connections of the store's and the ledger's pool each.
    store_command_timeout_s: float = 30.0
    store_pool_size: int = 8
    # Servers.
    grpc_listen: str = "127.0.0.1:50051"
    http_listen: str = "127.0.0.1:8080"
    # gRPC over TLS (README: Backend authentication). Certificate and key (PEM files) both or
    # neither; plaintext only when grpc_listen is loopback. A client CA turns on mutual TLS.
    grpc_tls_cert: str = ""
    grpc_tls_key: str = ""
    grpc_tls_client_ca: str = ""
    # Backend credentials: the file (empty: data_dir/credentials/credentials.toml, created with
    # an admin credential on first start) plus entries given here (hashes only, no secrets).
    grpc_credentials_file: str = ""
    grpc_credentials: str = field(default="", repr=False)
    # Reference data (sim_profiles/ and roaming/ live below this directory).
    reference_dir: str = str(PROJECT_ROOT)
    # Ingress limits.
    max_payload_bytes: int = 64 * 1024
    # Messages read from the broker but not yet processed; above it reading pauses.
    ingress_queue_messages: int = 50_000
    # Vehicle events kept for Watch resumption.
    event_retention: int = 1_000_000
    # Entitlement events (the outbox WatchEntitlementEvents reads) kept for resumption; older
    # cursors answer OUT_OF_RANGE like pruned vehicle events.
    entitlement_event_retention: int = 1_000_000
    telemetry_subscriber_queue: int = 1024
    # Where telemetry records leave the gateway (gateway/egress/sink.py): "grpc", the live
    # fan-out to this gateway's SubscribeTelemetry streams, or "jetstream", a durable NATS
    # JetStream stream (nats_url; subjects <telemetry_subject_prefix>.<VIN>) that every
    # gateway's SubscribeTelemetry reads, resumable by cursor. nats_url: not in repr() (it may
    # hold a password).
    telemetry_sink: str = "grpc"
    nats_url: str = field(default="", repr=False)
    telemetry_stream: str = "TELEMETRY"
    telemetry_subject_prefix: str = "telemetry"
    shutdown_grace_s: float = 10.0
    # Entitlements: R17 idle wait before an FoD command; an entitlement set not acked in time
    # is delivered again on the next boot (R13).
    fod_idle_s: float = 600.0
    entitlement_ack_timeout_s: float = 600.0
    # Liveness: the heartbeat interval assumed for a car whose Hello announces none (cars of
    # the contract before heartbeats). Silent for 3 intervals plus the R20 presence grace, a
    # car is reported offline (reason TIMEOUT); its next envelope brings it back.
    heartbeat_default_s: float = 120.0
    # R7: this many wrong security codes in a row lock the account's remote services for
    # security_code_lockout_s seconds (durable: a restart does not end a lockout).
    security_code_max_failures: int = 5
    security_code_lockout_s: float = 900.0
    # Per-car limits (token buckets per VIN, gateway/session/ratelimit.py): every message on a
    # car's topics, and its Hellos (one per MQTT connection). The excess is dropped and counted
    # (rate_limited, hello_rate_limited). Generous: a real car sends about one envelope per
    # few seconds and a flush of buffered data after a dead zone fits the burst; `make bench`
    # (300 envelopes per car) never reaches it.
    car_rate_per_s: float = 100.0
    car_burst: int = 1000
    car_hello_rate_per_s: float = 1.0
    car_hello_burst: int = 20
    # After the gateway's broker session resumes (CONNACK session present), the broker delivers
    # what it queued meanwhile at the gateway's pace: the per-car limits pause this long so a
    # car's backlog is not dropped as a flood.
    car_limit_catch_up_s: float = 300.0
    # A car with more than car_quarantine_excess messages over its limit within
    # car_quarantine_window_s seconds is quarantined for car_quarantine_s: the managed broker
    # drops its uplink (an external broker cannot be told: the gateway drops it, and the
    # broker's own per-client limit is the real defence, README "Limits"). 0 disables it.
    car_quarantine_excess: int = 5000
    car_quarantine_window_s: float = 10.0
    car_quarantine_s: float = 300.0
    log_level: str = "INFO"
    # "text" (one human-readable line per record) or "json" (one object per line: ts, level,
    # logger, event, message and fields; for log collectors). Text by default: what a person
    # running `run` in a terminal reads; deployments choose json (gateway/logs.py).
    log_format: str = "text"
    # Liveness (/healthz): messages are queued but the pipeline has processed none for this
    # long (while the store is available): the process is wedged and should be restarted.
    wedge_after_s: float = 60.0

    @property
    def broker_is_managed(self) -> bool:
        return not self.mqtt_url

    @property
    def pki_dir(self) -> Path:
        """The managed broker's development CA and the gateway's own credentials."""
        return Path(self.data_dir) / "pki"

    @property
    def tls_connect_host(self) -> str:
        """Where the gateway reaches the managed TLS listener (a wildcard bind: on loopback)."""
        bare = self.mqtt_tls_host.strip("[]")
        return {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(bare, bare)

    def broker(self) -> BrokerAddress:
        """Where the gateway connects: with a managed broker, its TLS listener when there is
        one (so the gateway is known by its certificate), else its plain listener."""
        if self.broker_is_managed:
            if self.mqtt_tls_port:
                host = self.tls_connect_host
                return BrokerAddress(host, self.mqtt_tls_port, None, None, self.display_url, True)
            return BrokerAddress(self.mqtt_host, self.mqtt_port, None, None, self.display_url)
        return parse_mqtt_url(self.mqtt_url)

    @property
    def display_url(self) -> str:
        if self.mqtt_url:
            return redact_url(self.mqtt_url)
        if self.mqtt_tls_port:
            host = self.tls_connect_host
            return f"mqtts://{f'[{host}]' if ':' in host else host}:{self.mqtt_tls_port}"
        return f"mqtt://{self.mqtt_host}:{self.mqtt_port}"

    @property
    def store_display(self) -> str:
        """Where the store is, in a form that may be logged (no password)."""
        return redact_url(self.store_url) if self.store_url else f"sqlite:{self.data_dir}"


def parse_mqtt_url(url: str) -> BrokerAddress:
    try:
        return cv.parse_mqtt_url(url)
    except ValueError as exc:
        raise ConfigError(f"mqtt_url: {exc}") from None


def split_listen(value: str, key: str) -> tuple[str, int]:
    try:
        return cv.split_listen(value)
    except ValueError as exc:
        raise ConfigError(f"{key}: {exc}") from None


# One check per key: every field of Config must have one (tests/unit/test_config.py checks).
CHECKS: dict[str, Callable[[object], object]] = {
    "mqtt_url": cv.mqtt_url,
    "mqtt_host": cv.loopback_host,
    "mqtt_port": cv.int_in(1, 65535),
    "mqtt_tls_host": cv.host,
    "mqtt_tls_port": cv.tls_port,
    "mqtt_ca_file": cv.optional_file,
    "mqtt_cert_file": cv.optional_file,
    "mqtt_key_file": cv.optional_file,
    "mqtt_client_id": cv.client_id,
    "mqtt_shared_group": cv.shared_group,
    "mqtt_slots": cv.int_in(1, 1000),
    "mqtt_slot_lease_s": cv.seconds_in(0.3, 3600),
    "mqtt_session_expiry_warn_s": cv.seconds_in(0, 7 * 86400),
    "mosquitto_bin": cv.executable,
    "data_dir": cv.non_empty,
    "store_url": cv.store_url,
    "store_command_timeout_s": cv.seconds_in(0.1, 3600),
    "store_pool_size": cv.int_in(1, 1000),
    "grpc_listen": cv.listen,
    "http_listen": cv.listen,
    "grpc_tls_cert": cv.optional_file,
    "grpc_tls_key": cv.optional_file,
    "grpc_tls_client_ca": cv.optional_file,
    "grpc_credentials_file": cv.optional_path,
    "grpc_credentials": cv.grpc_credentials,
    "reference_dir": cv.non_empty,
    "max_payload_bytes": cv.int_in(256, cv.MQTT_PACKET_MAX),
    "ingress_queue_messages": cv.int_in(1, 10_000_000),
    # At least the newest event stays, so a pruned cursor is always recognised (OUT_OF_RANGE).
    "event_retention": cv.int_in(1, 2**62),
    "entitlement_event_retention": cv.int_in(1, 2**62),
    "telemetry_subscriber_queue": cv.int_in(1, 1_000_000),
    "telemetry_sink": cv.telemetry_sink,
    "nats_url": cv.nats_url,
    "telemetry_stream": cv.stream_name,
    "telemetry_subject_prefix": cv.subject_prefix,
    "shutdown_grace_s": cv.seconds_in(0, 3600),
    "fod_idle_s": cv.seconds_in(0, 7 * 86400),
    "entitlement_ack_timeout_s": cv.seconds_in(0, 30 * 86400, lo_inclusive=False),
    "heartbeat_default_s": cv.seconds_in(0, 3600, lo_inclusive=False),
    "security_code_max_failures": cv.int_in(1, 100),
    "security_code_lockout_s": cv.seconds_in(1, 30 * 86400),
    "car_rate_per_s": cv.rate_in(0, 1_000_000),
    "car_burst": cv.int_in(1, 10_000_000),
    "car_hello_rate_per_s": cv.rate_in(0, 1_000_000),
    "car_hello_burst": cv.int_in(1, 10_000_000),
    "car_limit_catch_up_s": cv.seconds_in(0, 3600),
    "car_quarantine_excess": cv.int_in(0, 1_000_000_000),
    "car_quarantine_window_s": cv.seconds_in(0, 3600, lo_inclusive=False),
    "car_quarantine_s": cv.seconds_in(0, 7 * 86400, lo_inclusive=False),
    "log_level": cv.log_level,
    "log_format": cv.log_format,
    "wedge_after_s": cv.seconds_in(1, 86400),
}
KEYS = tuple(f.name for f in fields(Config))
ENV_PREFIX = "GATEWAY_"
# GATEWAY_* variables that are not keys but are read (GATEWAY_CONFIG names the file;
# GATEWAY_TEST_KILL is the crash tests' fault injection, gateway/faults.py).
ENV_EXTRA = frozenset({"GATEWAY_CONFIG", "GATEWAY_TEST_KILL"})
FLAGS = {"mqtt_url": "--mqtt-url", "data_dir": "--data-dir", "store_url": "--store-url",
         "grpc_listen": "--grpc-listen", "http_listen": "--http-listen"}


def _suggest(name: str, candidates: list[str], prefix: str = "") -> str:
    """The closest candidate, compared without the common prefix (it would make all close)."""
    bare = {c.removeprefix(prefix).lower(): c for c in candidates}
    close = difflib.get_close_matches(name.removeprefix(prefix).lower(), list(bare), n=1, cutoff=0.8)
    return f" (did you mean {bare[close[0]]}?)" if close else ""


def _checked(key: str, where: str, raw: object) -> object:
    try:
        return CHECKS[key](raw)
    except ValueError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def load_config(
    path: str | None = None,
    env: Mapping[str, str] | None = None,
    *,
    warn: Callable[[str], None] | None = None,
    **overrides: Any,
) -> Config:
    """The checked configuration; ConfigError (one line, no secret) on the first bad value.

    ``warn`` receives one line per unknown GATEWAY_* variable (default: a log warning).
    """
    env = os.environ if env is None else env
    warn = warn or log.warning
    values: dict[str, Any] = {}  # each CHECKS entry returns its field's type (tested)
    path = path or env.get("GATEWAY_CONFIG") or None
    if path:
        try:
            with open(path, "rb") as fh:
                file_values = tomllib.load(fh)
        except OSError as exc:
            raise ConfigError(f"config file {path}: {exc.strerror}") from exc
        except tomllib.TOMLDecodeError as exc:
            # The message names line and column only, never the offending text.
            raise ConfigError(f"config file {path}: {exc}") from None
        for key, raw in file_values.items():
            if key not in CHECKS:
                raise ConfigError(f"config file {path}: unknown key {key!r}{_suggest(key, list(KEYS))}")
            values[key] = _checked(key, f"config file {path}: {key}", raw)
    env_names = {ENV_PREFIX + key.upper(): key for key in KEYS}
    # Warnings first: a misspelt name explains a later error or an ignored setting.
    for name in sorted(env):
        if name.startswith(ENV_PREFIX) and name not in env_names and name not in ENV_EXTRA:
            # Name the variable only: its value may be a secret meant for another key.
            hint = _suggest(name, [*env_names, *ENV_EXTRA], ENV_PREFIX)
            warn(f"unknown environment variable {name} ignored{hint}")
    for name, key in env_names.items():
        if name in env:
            values[key] = _checked(key, name, env[name])
    for key, raw in overrides.items():
        if key not in CHECKS:
            raise TypeError(f"load_config: unknown key {key!r}")
        if raw is not None:
            values[key] = _checked(key, FLAGS.get(key, key), raw)
    config = dataclasses.replace(Config(), **values)
    _check_combinations(config)
    _check_grpc_tls(config)
    return config


def _check_combinations(config: Config) -> None:
    """Checks that concern more than one key (each key alone passed its own check)."""
    if bool(config.mqtt_cert_file) != bool(config.mqtt_key_file):
        raise ConfigError(
            "mqtt_cert_file and mqtt_key_file: give both (a client certificate and its key) or neither"
        )
    files = [k for k in ("mqtt_ca_file", "mqtt_cert_file", "mqtt_key_file") if getattr(config, k)]
    if files and not config.broker().tls:
        raise ConfigError(
            f"{', '.join(files)}: set, but the broker connection is plain TCP "
            "(use an mqtts:// mqtt_url, or the managed broker with mqtt_tls_port)"
        )
    if config.broker_is_managed and config.mqtt_tls_port and config.mqtt_tls_port == config.mqtt_port:
        raise ConfigError(f"mqtt_tls_port: {config.mqtt_tls_port} is also mqtt_port")
    if config.telemetry_sink == "jetstream" and not config.nats_url:
        raise ConfigError("telemetry_sink: jetstream needs nats_url (nats://host:4222)")
    if config.mqtt_slots > 1 and not (config.store_url and config.mqtt_url and config.mqtt_shared_group):
        # Slots are leased in PostgreSQL, shared on a broker all gateways reach, and split the
        # messages only within a shared group (else each slot would receive every message).
        raise ConfigError(
            f"mqtt_slots: {config.mqtt_slots} slots need store_url, mqtt_url and mqtt_shared_group"
        )


def _check_grpc_tls(config: Config) -> None:
    """Keys that only make sense together (README: Backend authentication)."""
    if bool(config.grpc_tls_cert) != bool(config.grpc_tls_key):
        raise ConfigError(
            "grpc_tls_cert and grpc_tls_key: set both (the server certificate and its key) or neither"
        )
    if config.grpc_tls_client_ca and not config.grpc_tls_cert:
        raise ConfigError("grpc_tls_client_ca: mutual TLS needs grpc_tls_cert and grpc_tls_key too")
    if not config.grpc_tls_cert and not cv.is_loopback_listen(config.grpc_listen):
        # Bearer tokens in plaintext over a network would be readable by anyone on the path.
        raise ConfigError(
            f"grpc_listen: {config.grpc_listen} is not loopback; gRPC beyond loopback needs TLS"
            " (set grpc_tls_cert and grpc_tls_key), or listen on 127.0.0.1"
        )
