"""Configuration of the broker's listeners and of the gateway's TLS to its broker."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from gateway.config import ConfigError, load_config


def test_the_managed_broker_has_a_tls_listener_on_18883_and_the_gateway_uses_it() -> None:
    cfg = load_config(env={})
    assert cfg.mqtt_tls_port == 18883
    address = cfg.broker()
    assert (address.host, address.port, address.tls) == ("127.0.0.1", 18883, True)
    assert cfg.display_url == "mqtts://127.0.0.1:18883"


def test_without_a_tls_listener_the_gateway_uses_the_plain_one() -> None:
    cfg = load_config(env={"GATEWAY_MQTT_TLS_PORT": "0"})
    address = cfg.broker()
    assert (address.port, address.tls) == (18830, False)
    assert cfg.display_url == "mqtt://127.0.0.1:18830"


def test_a_wildcard_tls_listener_is_reached_on_loopback() -> None:
    cfg = load_config(env={"GATEWAY_MQTT_TLS_HOST": "0.0.0.0"})
    assert cfg.broker().host == "127.0.0.1"


@pytest.mark.parametrize("host", ["0.0.0.0", "10.0.0.5", "gateway.example", "::"])
def test_the_plain_listener_is_refused_off_loopback(host: str) -> None:
    with pytest.raises(ConfigError, match=r"GATEWAY_MQTT_HOST: .* is not a loopback address"):
        load_config(env={"GATEWAY_MQTT_HOST": host})


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "::1", "[::1]", "localhost"])
def test_the_plain_listener_may_use_any_loopback_address(host: str) -> None:
    assert load_config(env={"GATEWAY_MQTT_HOST": host}).mqtt_host == host


def test_an_mqtts_url_means_tls_on_port_8883_by_default() -> None:
    address = load_config(env={"GATEWAY_MQTT_URL": "mqtts://gw:s3cret@broker.example"}).broker()
    assert (address.host, address.port, address.tls, address.username) == ("broker.example", 8883, True, "gw")
    assert address.display == "mqtts://gw:***@broker.example"


def test_a_client_certificate_needs_its_key(tmp_path: Path) -> None:
    cert = tmp_path / "gw.crt"
    cert.write_text("x")
    with pytest.raises(ConfigError, match="give both"):
        load_config(env={"GATEWAY_MQTT_URL": "mqtts://broker.example", "GATEWAY_MQTT_CERT_FILE": str(cert)})


def test_tls_files_for_a_plain_broker_connection_are_an_error(tmp_path: Path) -> None:
    ca = tmp_path / "ca.crt"
    ca.write_text("x")
    with pytest.raises(ConfigError, match="mqtt_ca_file: set, but the broker connection is plain TCP"):
        load_config(env={"GATEWAY_MQTT_URL": "mqtt://broker.example", "GATEWAY_MQTT_CA_FILE": str(ca)})


def test_a_missing_tls_file_is_named_by_path() -> None:
    with pytest.raises(ConfigError, match=re.escape("GATEWAY_MQTT_CA_FILE: '/nonexistent/ca.crt' is not a")):
        load_config(env={"GATEWAY_MQTT_CA_FILE": "/nonexistent/ca.crt"})


def test_the_tls_listener_cannot_share_the_plain_listeners_port() -> None:
    with pytest.raises(ConfigError, match="mqtt_tls_port: 18830 is also mqtt_port"):
        load_config(env={"GATEWAY_MQTT_TLS_PORT": "18830"})


def test_an_encrypted_client_key_fails_naming_its_path(tmp_path: Path) -> None:
    from cryptography.hazmat.primitives import serialization

    from gateway.ingress.mqtt_tls import MqttTls, MqttTlsError, client_context
    from gateway.security import pki

    files, _ = pki.ensure_embedded_pki(tmp_path / "pki", gateway_identity="gw")
    key = serialization.load_pem_private_key(files.gateway_key.read_bytes(), password=None)
    locked = tmp_path / "locked.key"
    locked.write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"passphrase"),
    ))
    with pytest.raises(MqttTlsError, match=re.escape(str(locked))):
        client_context(MqttTls(files.ca_cert, files.gateway_cert, locked))
