"""Gateway configuration: plain data, read from a TOML file and GATEWAY_* environment variables.

Precedence: defaults < config file (``--config`` or GATEWAY_CONFIG) < environment. Every key of
``Config`` is settable both ways; the environment name is ``GATEWAY_`` + the key in capitals.
No factories here: wiring happens in gateway/app.py.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

PROJECT_ROOT = Path(__file__).resolve().parent.parent


class ConfigError(Exception):
    """A configuration value is missing, malformed or out of range."""


@dataclass(frozen=True, slots=True)
class Config:
    # MQTT. Empty mqtt_url: start a managed Mosquitto on mqtt_host:mqtt_port.
    mqtt_url: str = ""
    mqtt_host: str = "127.0.0.1"
    mqtt_port: int = 18830
    mqtt_client_id: str = "telematics-gateway"
    # Non-empty: subscribe through $share/<group>/ so several gateways split the load.
    mqtt_shared_group: str = ""
    mosquitto_bin: str = ""  # empty: found on PATH or in /usr/sbin
    # Store.
    data_dir: str = "data"
    # Servers.
    grpc_listen: str = "127.0.0.1:50051"
    http_listen: str = "127.0.0.1:8080"
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
    shutdown_grace_s: float = 10.0
    # Entitlements: R17 idle wait before an FoD command; an entitlement set not acked in time
    # is delivered again on the next boot (R13).
    fod_idle_s: float = 600.0
    entitlement_ack_timeout_s: float = 600.0
    log_level: str = "INFO"

    @property
    def broker_is_managed(self) -> bool:
        return not self.mqtt_url

    def broker(self) -> BrokerAddress:
        if self.broker_is_managed:
            return BrokerAddress(self.mqtt_host, self.mqtt_port, None, None, self.display_url)
        return parse_mqtt_url(self.mqtt_url)

    @property
    def display_url(self) -> str:
        if self.mqtt_url:
            return redact_url(self.mqtt_url)
        return f"mqtt://{self.mqtt_host}:{self.mqtt_port}"


@dataclass(frozen=True, slots=True)
class BrokerAddress:
    host: str
    port: int
    username: str | None
    password: str | None
    display: str


def parse_mqtt_url(url: str) -> BrokerAddress:
    parts = urlsplit(url)
    if parts.scheme not in ("mqtt", "tcp"):
        raise ConfigError(f"mqtt_url: scheme must be mqtt:// (got {url!r})")
    if not parts.hostname:
        raise ConfigError(f"mqtt_url: no host in {url!r}")
    try:
        port = parts.port or 1883
    except ValueError as exc:
        raise ConfigError(f"mqtt_url: bad port in {url!r}") from exc
    user = unquote(parts.username) if parts.username else None
    password = unquote(parts.password) if parts.password else None
    return BrokerAddress(parts.hostname, port, user, password, redact_url(url))


def redact_url(url: str) -> str:
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    user = f"{parts.username}:***@" if parts.password else (f"{parts.username}@" if parts.username else "")
    return f"{parts.scheme}://{user}{host}{port}"


def split_listen(value: str, key: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit():
        raise ConfigError(f"{key}: expected host:port, got {value!r}")
    return host, int(port)


def _coerce(key: str, kind: Any, raw: Any) -> Any:
    try:
        if kind is bool or kind == "bool":
            if isinstance(raw, bool):
                return raw
            return str(raw).strip().lower() in ("1", "true", "yes", "on")
        if kind is int or kind == "int":
            return int(raw)
        if kind is float or kind == "float":
            return float(raw)
        return str(raw)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{key}: {raw!r} is not a valid {kind}") from exc


def load_config(
    path: str | None = None, env: Mapping[str, str] | None = None, **overrides: Any
) -> Config:
    env = os.environ if env is None else env
    values: dict[str, Any] = {}
    path = path or env.get("GATEWAY_CONFIG") or None
    known = {f.name: f.type for f in fields(Config)}
    if path:
        try:
            with open(path, "rb") as fh:
                file_values = tomllib.load(fh)
        except OSError as exc:
            raise ConfigError(f"config file {path}: {exc.strerror}") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {path}: {exc}") from exc
        for key, raw in file_values.items():
            if key not in known:
                raise ConfigError(f"config file {path}: unknown key {key!r}")
            values[key] = _coerce(key, known[key], raw)
    for key, kind in known.items():
        name = f"GATEWAY_{key.upper()}"
        if name in env:
            values[key] = _coerce(name, kind, env[name])
    values.update({k: v for k, v in overrides.items() if v is not None})
    config = dataclasses.replace(Config(), **values)
    _validate(config)
    return config


def _validate(config: Config) -> None:
    split_listen(config.grpc_listen, "grpc_listen")
    split_listen(config.http_listen, "http_listen")
    if config.mqtt_url:
        parse_mqtt_url(config.mqtt_url)
    if not 1 <= config.mqtt_port <= 65535:
        raise ConfigError(f"mqtt_port: {config.mqtt_port} is not a TCP port")
    if config.max_payload_bytes < 256:
        raise ConfigError("max_payload_bytes: must be at least 256")
    if config.ingress_queue_messages < 1 or config.telemetry_subscriber_queue < 1:
        raise ConfigError("queue sizes must be at least 1")
    # At least the newest event stays, so a pruned cursor is always recognised (OUT_OF_RANGE).
    for key in ("event_retention", "entitlement_event_retention"):
        if getattr(config, key) < 1:
            raise ConfigError(f"{key}: must be at least 1")
