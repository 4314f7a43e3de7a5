"""What the broker's CONNACK grants, checked against what the gateway relies on.

* Shared subscriptions (``mqtt_shared_group``): a broker announcing Shared Subscription
  Available = 0 would refuse the `$share/` filters; the gateway says so in one line instead.
* The session expiry: the gateway's session is persistent (clean start off), so the broker
  queues what cars send while the gateway restarts (README "Architecture"). A broker may grant
  less than asked (CONNACK Session Expiry Interval). 0 means no session survives a disconnect:
  every gateway restart would lose what cars sent meanwhile, so the gateway refuses to run on
  it. A short one (below ``short_s``) is logged and shown by /readyz as a warning: the gateway
  works, but a restart that takes longer loses messages.
"""

from __future__ import annotations

import logging
from typing import Protocol

from gateway.ingress import mqtt5_codec as codec
from gateway.ingress.mqtt5 import MqttConnectError

log = logging.getLogger(__name__)


class MqttFeatureMissing(MqttConnectError):
    """The broker lacks something the configuration relies on (not worth retrying at start)."""


class Gauge(Protocol):
    def set(self, value: float) -> None: ...


class BrokerGrants:
    def __init__(self, *, asked_expiry_s: int, shared_group: str, short_s: float, gauge: Gauge) -> None:
        """asked_expiry_s: the Session Expiry Interval the gateway asks for. shared_group: the
        configured mqtt_shared_group (empty: none needed). short_s: below it a granted expiry is
        a readiness warning. gauge: set to the granted expiry on every connect."""
        self.asked_expiry_s = asked_expiry_s
        self._shared_group = shared_group
        self._short_s = short_s
        self._gauge = gauge
        self.granted_expiry_s: int | None = None  # None until the first CONNACK

    def check(self, connack: codec.ConnAck, where: str) -> None:
        """MqttFeatureMissing when the broker lacks what the configuration needs."""
        props = connack.properties
        if self._shared_group and props.get(codec.SHARED_SUBSCRIPTION_AVAILABLE) == 0:
            raise MqttFeatureMissing(
                f"the MQTT broker at {where} does not support shared subscriptions (CONNACK Shared "
                f"Subscription Available = 0), which mqtt_shared_group = {self._shared_group!r} needs"
            )
        granted = props.get(codec.SESSION_EXPIRY, self.asked_expiry_s)  # absent: as asked (MQTT 5 3.2.2.3.2)
        if not isinstance(granted, int):
            raise MqttFeatureMissing(f"the MQTT broker at {where} sent a malformed Session Expiry Interval")
        if granted == 0:
            raise MqttFeatureMissing(
                f"the MQTT broker at {where} grants no persistent session (CONNACK Session Expiry "
                f"Interval 0, asked {self.asked_expiry_s} s): what cars send while the gateway "
                "restarts would be lost"
            )
        self.granted_expiry_s = granted
        self._gauge.set(granted)
        log.info("MQTT session expiry: %d s granted by %s (asked %d s)", granted, where, self.asked_expiry_s)

    def warning(self) -> str | None:
        """A short granted session expiry, in words for /readyz; None when none is short."""
        granted = self.granted_expiry_s
        if granted is None or granted >= self._short_s:
            return None
        return (
            f"the broker granted an MQTT session expiry of {granted} s (asked {self.asked_expiry_s} s, "
            f"below mqtt_session_expiry_warn_s {self._short_s:g} s): messages cars send while the "
            f"gateway is away longer than that are lost"
        )
