"""What the pipeline tells the entitlement engine about a vehicle, and the engine's reading of a
session's link (R13 "connected to the internet", R17 "a good data connection")."""

from __future__ import annotations

from dataclasses import dataclass

from gateway._gen.telematics.v1 import uplink_pb2
from gateway.model import Presence, Radio, VehicleSession


@dataclass(frozen=True, slots=True)
class VehicleUpdate:
    """One applied uplink message, built by the pipeline.

    session: the vehicle's session right after the message.
    booted_online: a Hello with boot=true was just applied (R13: services appear after the
        next restart while online).
    entitlement_ack, fod_result: the message's body when it was one of these.
    """

    session: VehicleSession
    booted_online: bool = False
    entitlement_ack: uplink_pb2.EntitlementAck | None = None
    fod_result: uplink_pb2.FodResult | None = None


def is_online(session: VehicleSession) -> bool:
    return session.presence is Presence.ONLINE


def default_link_good(session: VehicleSession) -> bool:
    """R17 "good data connection": online, and not on 2G, where data stops during a call
    (R20)."""
    return is_online(session) and session.radio is not Radio.G2
