"""What the pipeline tells the entitlement engine about a vehicle: one `VehicleUpdate` per
applied uplink message. The engine's reading of a session's link (R13, R17) is pure domain:
`domain.eligibility.is_online` and `default_link_good`."""

from __future__ import annotations

from dataclasses import dataclass

from gateway._gen.telematics.v1 import uplink_pb2
from gateway.model import VehicleSession


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
