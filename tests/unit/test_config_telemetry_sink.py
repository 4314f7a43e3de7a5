"""The telemetry sink's settings (README "Telemetry sinks"): checked at load, secrets withheld."""

from __future__ import annotations

import pytest

from gateway.config import ConfigError, load_config

SECRET = "s3cret"


def test_the_default_sink_is_the_live_grpc_fan_out() -> None:
    cfg = load_config(env={})
    assert cfg.telemetry_sink == "grpc" and cfg.nats_url == ""


def test_jetstream_with_a_nats_url_is_accepted() -> None:
    cfg = load_config(env={
        "GATEWAY_TELEMETRY_SINK": "JetStream", "GATEWAY_NATS_URL": f"nats://gw:{SECRET}@nats.example:4222",
        "GATEWAY_TELEMETRY_STREAM": "FLEET_EU", "GATEWAY_TELEMETRY_SUBJECT_PREFIX": "eu.telemetry",
    })
    assert (cfg.telemetry_sink, cfg.telemetry_stream, cfg.telemetry_subject_prefix) == (
        "jetstream", "FLEET_EU", "eu.telemetry")
    assert SECRET not in repr(cfg)


def test_jetstream_without_a_nats_url_is_an_error() -> None:
    with pytest.raises(ConfigError, match="telemetry_sink: jetstream needs nats_url"):
        load_config(env={"GATEWAY_TELEMETRY_SINK": "jetstream"})


def test_an_unknown_sink_is_an_error_naming_the_choices() -> None:
    with pytest.raises(ConfigError, match="GATEWAY_TELEMETRY_SINK: 'kafka' is not one of grpc, jetstream"):
        load_config(env={"GATEWAY_TELEMETRY_SINK": "kafka"})


@pytest.mark.parametrize("url", [
    f"http://gw:{SECRET}@nats.example:4222",  # not nats:// or tls://
    f"nats://gw:{SECRET}@nats.example:99999",  # port out of range
    f"nats://gw:{SECRET}@nats.example:4222/path",
])
def test_a_bad_nats_url_is_an_error_without_its_password(url: str) -> None:
    with pytest.raises(ConfigError, match="GATEWAY_NATS_URL") as caught:
        load_config(env={"GATEWAY_NATS_URL": url})
    assert SECRET not in str(caught.value)


@pytest.mark.parametrize(("key", "value"), [
    ("GATEWAY_TELEMETRY_STREAM", "TELE.METRY"),  # '.' would be a subject separator
    ("GATEWAY_TELEMETRY_STREAM", ""),
    ("GATEWAY_TELEMETRY_SUBJECT_PREFIX", "telemetry.>"),  # a wildcard
    ("GATEWAY_TELEMETRY_SUBJECT_PREFIX", "a..b"),
])
def test_stream_names_and_subject_prefixes_are_nats_tokens(key: str, value: str) -> None:
    with pytest.raises(ConfigError, match=key):
        load_config(env={key: value})
