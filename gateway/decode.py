"""Decode and validate uplink payloads. The first stage after ingress.

Every refusal is a ``Rejected`` value with a bounded reason (a metric label) and a clear detail
for the log. Nothing here raises on bad input: a bad message must never stop the pipeline.
The range of every field is checked too (``gateway.validate``): an envelope with one value out of
range is rejected whole, before the session tracker, so the car's replay window is untouched.
"""

from __future__ import annotations

from dataclasses import dataclass

from google.protobuf.message import DecodeError

from gateway import topics, validate
from gateway._gen.telematics.v1 import common_pb2, uplink_pb2
from gateway.model import is_valid_vin

_BEARERS = frozenset(common_pb2.Bearer.values())
_RADIOS = frozenset(common_pb2.Radio.values())
_POWER = frozenset(common_pb2.PowerState.values())
_LOCK = frozenset(common_pb2.LockState.values())
_PLUG = frozenset(common_pb2.ChargingPlug.values())
_PRIVACY = frozenset(common_pb2.PrivacyMode.values())
_FOD_ACTIONS = frozenset(uplink_pb2.FodAction.values())
_BODIES_WITH_ENUMS = frozenset({"hello", "state_change", "fod_result"})  # see _unknown_enum
_Envelope = uplink_pb2.Envelope
_WILL = topics.Channel.WILL


@dataclass(frozen=True, slots=True)
class Rejected:
    reason: str  # one of gateway.metrics.REJECT_REASONS
    detail: str
    vin: str = ""


# Not frozen, unlike the other results: one is built per accepted message, and a frozen
# dataclass's __init__ sets each field through object.__setattr__ (twice the cost). Nothing
# changes one after decode.
@dataclass(slots=True)
class Decoded:
    vin: str
    envelope: uplink_pb2.Envelope
    body: str  # the envelope's body field name (its oneof), read once here


@dataclass(frozen=True, slots=True)
class DecodedWill:
    vin: str
    connection_id: int


def decode(topic: str, payload: bytes, max_bytes: int, *, now: float) -> Decoded | DecodedWill | Rejected:
    """``now``: the gateway's clock (unix seconds), the reference for the car's timestamps."""
    parsed = decode_topic(topic)
    if isinstance(parsed, Rejected):
        return parsed
    return decode_payload(*parsed, payload, max_bytes, now=now)


def decode_topic(topic: str) -> tuple[str, topics.Channel] | Rejected:
    """The topic's VIN and channel. Apart from the payload, so that the pipeline parses a topic
    once for both its per-car limit and decoding."""
    parsed = topics.parse(topic)
    if parsed is None:
        return Rejected("bad_topic", f"topic {_shown(topic)} is not a vehicle uplink topic")
    if not is_valid_vin(parsed[0]):
        return Rejected(
            "vin_syntax", f"topic VIN {_shown(parsed[0])} is not 17 characters of A-Z/0-9 without I, O, Q"
        )
    return parsed


def decode_payload(
    vin: str, channel: topics.Channel, payload: bytes, max_bytes: int, *, now: float
) -> Decoded | DecodedWill | Rejected:
    """The payload of a message on `vin`'s `channel` topic (see decode_topic)."""
    if len(payload) > max_bytes:
        return Rejected("oversize", f"payload of {len(payload)} bytes exceeds {max_bytes}", vin)
    if channel is _WILL:
        return _decode_will(vin, payload)
    env = _Envelope()
    try:
        env.ParseFromString(payload)
    except DecodeError as exc:
        return Rejected("malformed_protobuf", f"not a telematics.v1.Envelope: {exc}", vin)
    if env.vin != vin:
        return Rejected("vin_mismatch", f"envelope VIN {_shown(env.vin)} differs from topic VIN", vin)
    if env.sequence == 0:
        return Rejected("sequence_missing", "sequence must be >= 1", vin)
    body = env.WhichOneof("body")
    if body is None:
        return Rejected("missing_body", "envelope has no body", vin)
    # The header's enums inline (every message); the bodies with enums of their own, and any
    # unknown value, in _unknown_enum.
    if (
        body in _BODIES_WITH_ENUMS
        or env.bearer not in _BEARERS
        or env.radio not in _RADIOS
        or env.privacy.mode not in _PRIVACY
    ):
        bad = _unknown_enum(env, body)
        if bad:
            return Rejected("unknown_enum", bad, vin)
    invalid = validate.check(env, body, now)
    if invalid is not None:
        return Rejected(invalid.reason, invalid.detail, vin)
    return Decoded(vin, env, body)


def _shown(text: str) -> str:
    """A value the car chose, for a log line: clipped, so a 64 KiB string is not logged whole."""
    return repr(text[:24]) + ("..." if len(text) > 24 else "")


def _decode_will(vin: str, payload: bytes) -> DecodedWill | Rejected:
    will = uplink_pb2.LastWill()
    try:
        will.ParseFromString(payload)
    except DecodeError as exc:
        return Rejected("malformed_protobuf", f"not a telematics.v1.LastWill: {exc}", vin)
    if will.vin != vin:
        return Rejected("vin_mismatch", f"last-will VIN {_shown(will.vin)} differs from topic VIN", vin)
    return DecodedWill(vin, will.connection_id)


def _unknown_enum(env: uplink_pb2.Envelope, body: str) -> str:
    """Proto3 enums are open: a newer car may send values this gateway does not know."""
    if env.bearer not in _BEARERS:
        return f"bearer {env.bearer} is unknown"
    if env.radio not in _RADIOS:
        return f"radio {env.radio} is unknown"
    if env.privacy.mode not in _PRIVACY:
        return f"privacy.mode {env.privacy.mode} is unknown"
    state: common_pb2.VehicleState | None = None
    if body == "hello":
        state = env.hello.state
    elif body == "state_change":
        state = env.state_change.state
    elif body == "fod_result" and env.fod_result.action not in _FOD_ACTIONS:
        return f"fod_result.action {env.fod_result.action} is unknown"
    if state is not None:
        if state.power not in _POWER:
            return f"state.power {state.power} is unknown"
        if state.lock not in _LOCK:
            return f"state.lock {state.lock} is unknown"
        if state.charging_plug not in _PLUG:
            return f"state.charging_plug {state.charging_plug} is unknown"
    return ""
