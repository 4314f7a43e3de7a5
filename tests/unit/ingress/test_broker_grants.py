"""The broker's CONNACK checked against what the gateway relies on (gateway/ingress/broker_grants.py)."""

from __future__ import annotations

import logging

import pytest

from gateway.ingress import mqtt5_codec as codec
from gateway.ingress.broker_grants import BrokerGrants, MqttFeatureMissing
from gateway.ingress.mqtt5 import MqttConnectError
from gateway.metrics import Metrics

WEEK = 7 * 24 * 3600
WHERE = "broker.example:1883"


def grants(metrics: Metrics, shared_group: str = "") -> BrokerGrants:
    return BrokerGrants(asked_expiry_s=WEEK, shared_group=shared_group, short_s=3600,
                        gauge=metrics.mqtt_session_expiry)


def connack(**props: int) -> codec.ConnAck:
    ids = {"shared": codec.SHARED_SUBSCRIPTION_AVAILABLE, "expiry": codec.SESSION_EXPIRY}
    return codec.ConnAck(False, 0, {ids[k]: v for k, v in props.items()})


def expiry_gauge(metrics: Metrics) -> float | None:
    return metrics.registry.get_sample_value("gateway_mqtt_session_expiry_seconds")


def test_a_broker_without_shared_subscriptions_is_refused_naming_the_feature_and_the_setting() -> None:
    with pytest.raises(MqttFeatureMissing) as caught:
        grants(Metrics(), shared_group="ingest").check(connack(shared=0), WHERE)
    message = str(caught.value)
    assert "does not support shared subscriptions" in message and "mqtt_shared_group = 'ingest'" in message
    assert "\n" not in message and isinstance(caught.value, MqttConnectError)  # start: one line, exit 2


def test_shared_subscriptions_matter_only_with_a_shared_group() -> None:
    grants(Metrics()).check(connack(shared=0), WHERE)
    grants(Metrics(), shared_group="ingest").check(connack(shared=1), WHERE)
    grants(Metrics(), shared_group="ingest").check(connack(), WHERE)  # absent: available (MQTT 5)


def test_a_granted_session_expiry_of_zero_is_refused_as_persistence_is_relied_on() -> None:
    metrics = Metrics()
    with pytest.raises(MqttFeatureMissing, match=r"grants no persistent session .*Session Expiry Interval 0"):
        grants(metrics).check(connack(expiry=0), WHERE)


def test_the_granted_session_expiry_is_logged_with_the_asked_one_and_exported(
    caplog: pytest.LogCaptureFixture,
) -> None:
    metrics = Metrics()
    checked = grants(metrics)
    with caplog.at_level(logging.INFO, "gateway.ingress.broker_grants"):
        checked.check(connack(expiry=300), WHERE)
    assert expiry_gauge(metrics) == 300 and checked.granted_expiry_s == 300
    assert [(r.levelno, r.getMessage()) for r in caplog.records] == [
        (logging.INFO, f"MQTT session expiry: 300 s granted by {WHERE} (asked {WEEK} s)")
    ]


def test_an_absent_session_expiry_property_means_the_asked_one_was_granted() -> None:
    metrics = Metrics()
    checked = grants(metrics)
    checked.check(connack(), WHERE)
    assert expiry_gauge(metrics) == WEEK and checked.warning() is None


def test_a_session_expiry_below_the_threshold_is_a_warning_and_one_at_it_is_not() -> None:
    checked = grants(Metrics())
    assert checked.warning() is None  # nothing granted yet
    checked.check(connack(expiry=3599), WHERE)
    warning = checked.warning()
    assert warning is not None and "3599 s" in warning and "mqtt_session_expiry_warn_s" in warning
    checked.check(connack(expiry=3600), WHERE)
    assert checked.warning() is None
