"""Conversions between generated protobuf types and domain types, in one place.

The domain enums share their numbers with the wire enums (gateway/model.py), so enum fields
convert by value. The store also keeps sessions as serialized ``telematics.v1.Vehicle``: the
contract type is versioned already, so it doubles as the snapshot format.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import lru_cache

from google.protobuf.timestamp_pb2 import Timestamp

from gateway._gen.telematics.v1 import common_pb2, vehicles_pb2
from gateway.model import (
    Bearer,
    ChargingPlug,
    LockState,
    OfflineReason,
    PowerState,
    Presence,
    Privacy,
    PrivacyMode,
    Radio,
    VehicleSession,
    VehicleState,
)
from gateway.reference.schema import LinkingMethod, MenuPath
from gateway.rules.linking import LinkingFacts
from gateway.rules.privacy import withheld_vehicle_fields
from gateway.session import compact
from gateway.session.events import EventKind, SessionEvent


def timestamp(seconds: float) -> Timestamp:
    ts = Timestamp()
    whole = int(seconds)
    ts.seconds = whole
    ts.nanos = round((seconds - whole) * 1e9) % 1_000_000_000
    return ts


def seconds(ts: Timestamp) -> float:
    return ts.seconds + ts.nanos / 1e9


def privacy_from_proto(p: common_pb2.Privacy) -> Privacy:
    """The service list counts only for per-service privacy. UNSPECIFIED is kept as it is:
    Privacy.withholds fails closed on it (R22)."""
    # Every envelope's header is read (the tracker, R22): a setting without services is one of
    # a few shared values, looked up by the wire's integer (no enum, frozenset or dataclass built
    # per message; Privacy is frozen, so sharing it is safe).
    plain = _PLAIN_PRIVACY.get(p.mode)
    if plain is not None:
        return plain
    mode = PrivacyMode(p.mode)
    # One shared Privacy per value (session/compact.py): every envelope and stored row has one.
    return compact.privacy(mode, frozenset(p.services))


# The settings without services, shared with session/compact.py's values.
_PLAIN_PRIVACY = {
    int(m): compact.privacy(m, frozenset()) for m in PrivacyMode if m is not PrivacyMode.PER_SERVICE
}


def privacy_to_proto(p: Privacy) -> common_pb2.Privacy:
    return common_pb2.Privacy(mode=int(p.mode), services=sorted(p.services))  # type: ignore[arg-type]


# A snapshot is serialized for every car each batch changes (the store's hot path, one per car
# and batch). Its privacy and state are few distinct values: their messages are built once per
# value (the constructor copies them into each Vehicle; never changed in place here).
@lru_cache(maxsize=1024)
def _privacy_message(p: Privacy) -> common_pb2.Privacy:
    return privacy_to_proto(p)


@lru_cache(maxsize=1024)
def _state_message(state: VehicleState) -> common_pb2.VehicleState:
    return common_pb2.VehicleState(
        power=int(state.power),  # type: ignore[arg-type]
        lock=int(state.lock),  # type: ignore[arg-type]
        charging_plug=int(state.charging_plug),  # type: ignore[arg-type]
        identity_verified=state.identity_verified,
        has_identity_verified=True,
    )


def _set_timestamp(ts: Timestamp, seconds: float) -> None:
    """`timestamp(seconds)` written into the field in place (no message built and copied)."""
    whole = int(seconds)
    ts.seconds = whole
    ts.nanos = round((seconds - whole) * 1e9) % 1_000_000_000


def vehicle_to_proto(s: VehicleSession) -> vehicles_pb2.Vehicle:
    v = vehicles_pb2.Vehicle(
        vin=s.vin,
        model=s.model,
        model_year=s.model_year,
        home_country=s.home_country,
        visited_country=s.visited_country,
        visited_mcc=s.visited_mcc,
        bearer=int(s.bearer),  # type: ignore[arg-type]
        radio=int(s.radio),  # type: ignore[arg-type]
        roaming=s.roaming,
        roaming_enabled=s.roaming_enabled,
        privacy=_privacy_message(s.privacy),
        state=_state_message(s.state),
        presence=int(s.presence),  # type: ignore[arg-type]
        offline_reason=int(s.offline_reason),  # type: ignore[arg-type]
        last_sequence=s.last_sequence,
        software_version=s.software_version,
        sequence_epoch=s.sequence_epoch,
        heartbeat_interval_s=s.heartbeat_interval_s,
    )
    if s.presence_changed_at:
        _set_timestamp(v.presence_changed_at, s.presence_changed_at)
    if s.last_seen_at:
        _set_timestamp(v.last_seen_at, s.last_seen_at)
    if s.last_boot_at:
        _set_timestamp(v.last_boot_at, s.last_boot_at)
    return v


def vehicle_to_api(s: VehicleSession) -> vehicles_pb2.Vehicle:
    """The session as backends see it (GetVehicle, ListVehicles, the events' snapshot).

    R22: while privacy covers all services or is unstated, the visited country and MCC (a
    coarse network location) are omitted; the stored snapshot (``vehicle_to_proto``) keeps
    them, since the roaming rules need them after a restart.
    """
    v = vehicle_to_proto(s)
    hidden = withheld_vehicle_fields(s.privacy)
    if "visited_country" in hidden:
        v.ClearField("visited_country")
    if "visited_mcc" in hidden:
        v.ClearField("visited_mcc")
    return v


def visible_changes(e: SessionEvent, session: VehicleSession) -> tuple[str, ...]:
    """The changed field names a backend may see under the session's privacy (R22: that the
    car crossed a border, and when, is a location too)."""
    hidden = withheld_vehicle_fields(session.privacy)
    return tuple(name for name in e.changed if name not in hidden)


def egress_event(e: SessionEvent, session: VehicleSession) -> SessionEvent | None:
    """The event as it may go to the event log, judged by the privacy at the event's time
    (`session` as the event left it); None when nothing of it may be told (R22: a state change
    that was only a new visited country/MCC)."""
    if e.kind is not EventKind.STATE_CHANGED:
        return e
    visible = visible_changes(e, session)
    if visible == e.changed:
        return e
    return replace(e, changed=visible) if visible else None


@dataclass(frozen=True, slots=True)
class SequenceExtra:
    """The parts of a session's sequence state that are not in telematics.v1.Vehicle (the
    store keeps them beside the snapshot): the replay window and the replaced space."""

    window: int = 0
    previous_epoch: int = 0
    previous_last: int = 0
    previous_window: int = 0


def vehicle_from_proto(
    v: vehicles_pb2.Vehicle, *, connection_id: int = 0, sequence: SequenceExtra = SequenceExtra()
) -> VehicleSession:
    return VehicleSession(
        vin=v.vin,
        # What many cars share is kept once (session/compact.py): a million are loaded at start.
        model=compact.text(v.model),
        model_year=compact.number(v.model_year),
        home_country=compact.text(v.home_country),
        visited_country=compact.text(v.visited_country),
        visited_mcc=compact.number(v.visited_mcc),
        bearer=Bearer(v.bearer),
        radio=Radio(v.radio),
        roaming=v.roaming,
        roaming_enabled=v.roaming_enabled,
        privacy=privacy_from_proto(v.privacy),
        state=compact.vehicle_state(
            PowerState(v.state.power),
            LockState(v.state.lock),
            ChargingPlug(v.state.charging_plug),
            v.state.identity_verified,
        ),
        presence=Presence(v.presence) if v.presence else Presence.OFFLINE,
        offline_reason=OfflineReason(v.offline_reason),
        presence_changed_at=seconds(v.presence_changed_at),
        last_seen_at=seconds(v.last_seen_at),
        last_boot_at=seconds(v.last_boot_at),
        sequence_epoch=v.sequence_epoch,
        last_sequence=v.last_sequence,
        seen_window=sequence.window,
        previous_epoch=sequence.previous_epoch,
        previous_last_sequence=sequence.previous_last,
        previous_seen_window=sequence.previous_window,
        connection_id=connection_id,
        software_version=compact.text(v.software_version),
        heartbeat_interval_s=compact.number(v.heartbeat_interval_s),
    )


def event_to_proto(e: SessionEvent, session: VehicleSession) -> vehicles_pb2.VehicleEvent:
    """The event without its cursor (the store assigns it), as backends may see it (R22)."""
    out = vehicles_pb2.VehicleEvent(vin=e.vin, vehicle=vehicle_to_api(session))
    out.at.CopyFrom(timestamp(e.at))
    match e.kind:
        case EventKind.ONLINE:
            out.online.boot = e.boot
        case EventKind.OFFLINE:
            out.offline.reason = int(e.offline_reason)  # type: ignore[assignment]
        case EventKind.STATE_CHANGED:
            out.state_changed.changed.extend(visible_changes(e, session))
        case EventKind.CHARGING_SESSION:
            out.charging_session.session.ParseFromString(e.charging_session)
    return out


_LINKING_METHODS: dict[LinkingMethod, vehicles_pb2.LinkingMethod.ValueType] = {
    "pairing_code": vehicles_pb2.LINKING_METHOD_PAIRING_CODE,
    "account_id": vehicles_pb2.LINKING_METHOD_ACCOUNT_ID,
}


def _menu_to_proto(menu: MenuPath) -> vehicles_pb2.MenuPath:
    return vehicles_pb2.MenuPath(
        en=menu.en, de=menu.de, note_en=menu.note_en or "", note_de=menu.note_de or ""
    )


def account_linking_to_proto(facts: LinkingFacts | None) -> vehicles_pb2.AccountLinking:
    """R5, R7. None (model unknown or without profile): method UNSPECIFIED, security code unset."""
    if facts is None:
        return vehicles_pb2.AccountLinking()
    linking = vehicles_pb2.AccountLinking(
        method=_LINKING_METHODS[facts.method],
        menu=_menu_to_proto(facts.menu),
        security_code_required=facts.security_code_required,
    )
    if facts.alternative_method is not None and facts.alternative_menu is not None:
        linking.alternative_method = _LINKING_METHODS[facts.alternative_method]
        linking.alternative_menu.CopyFrom(_menu_to_proto(facts.alternative_menu))
    return linking
