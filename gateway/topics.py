"""The MQTT 5 topic scheme (documented in the README, "MQTT topics").

    v1/vehicles/{vin}/up     vehicle -> gateway, telematics.v1.Envelope, QoS 1 (QoS 0 allowed
                             for telemetry the car may lose)
    v1/vehicles/{vin}/will   vehicle's MQTT last will, telematics.v1.LastWill, QoS 1
    v1/vehicles/{vin}/down   gateway -> vehicle, telematics.v1.Downlink, QoS 1
"""

from __future__ import annotations

import enum

PREFIX = "v1/vehicles/"
UPLINK_FILTER = "v1/vehicles/+/up"
WILL_FILTER = "v1/vehicles/+/will"


class Channel(enum.Enum):
    UP = "up"
    WILL = "will"


def uplink(vin: str) -> str:
    return f"{PREFIX}{vin}/up"


def will(vin: str) -> str:
    return f"{PREFIX}{vin}/will"


def downlink(vin: str) -> str:
    return f"{PREFIX}{vin}/down"


def subscriptions(shared_group: str = "") -> list[str]:
    """Topic filters the gateway subscribes to; shared when several gateways split the load."""
    prefix = f"$share/{shared_group}/" if shared_group else ""
    return [prefix + UPLINK_FILTER, prefix + WILL_FILTER]


def parse(topic: str) -> tuple[str, Channel] | None:
    """(vin, channel) of an uplink topic, or None when the topic is not ours."""
    if not topic.startswith(PREFIX):
        return None
    rest = topic[len(PREFIX):]
    vin, sep, leaf = rest.partition("/")
    if not sep or not vin:
        return None
    if leaf == "up":
        return vin, Channel.UP
    if leaf == "will":
        return vin, Channel.WILL
    return None
