"""Apply decoded uplink messages to vehicle sessions.

Presence comes from the birth message (Hello), the goodbye, the MQTT last will and the
car's silence (liveness.py: reason TIMEOUT); any new envelope proves the car is connected, so
it brings an offline car back online. Everything else updates the link, privacy and physical
state carried by the envelope. Only envelopes with a sequence above every earlier one of the
car's current sequence epoch change state (see sequence.py): an out-of-order or repeated
message never regresses a session.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from gateway._gen.telematics.v1 import common_pb2, uplink_pb2
from gateway.convert import privacy_from_proto
from gateway.model import (
    Bearer,
    ChargingPlug,
    LockState,
    OfflineReason,
    PowerState,
    Presence,
    Radio,
    VehicleSession,
    VehicleState,
)
from gateway.session import compact
from gateway.session.events import EventKind, SessionEvent
from gateway.session.liveness import LivenessSchedule
from gateway.session.sequence import MAX_JUMP, Arrival, Space, classify, classify_epoch

# Bodies of which the session takes nothing but the header (applied by ``_apply_header``) and
# the sequence: a message of these that changes no header field leaves the stored snapshot
# as it was, beyond its sequence (VehicleSession.snapshot_stale).
_SEQUENCE_ONLY_BODIES = frozenset(
    {"telemetry", "charging_session", "entitlement_ack", "fod_result", "command_result", "heartbeat"}
)


@dataclass(slots=True)
class Tracked:
    arrival: Arrival
    session: VehicleSession
    events: list[SessionEvent] = field(default_factory=list)
    dirty: bool = False


def _merge_state(old: VehicleState, new: common_pb2.VehicleState, full: bool) -> VehicleState:
    return compact.vehicle_state(  # one shared object per value (compact.py)
        PowerState(new.power) if new.power else old.power,
        LockState(new.lock) if new.lock else old.lock,
        ChargingPlug(new.charging_plug) if new.charging_plug else old.charging_plug,
        new.identity_verified if (full or new.has_identity_verified) else old.identity_verified,
    )


def _state_diff(old: VehicleState, new: VehicleState) -> list[str]:
    names = ("power", "lock", "charging_plug", "identity_verified")
    return [f"state.{n}" for n in names if getattr(old, n) != getattr(new, n)]


def _sequence_state(s: VehicleSession) -> tuple[int, ...]:
    """What the store keeps of the sequence spaces (not the in-memory jump candidates)."""
    return (s.sequence_epoch, s.last_sequence, s.seen_window, s.previous_epoch,
            s.previous_last_sequence, s.previous_seen_window)


class SessionTracker:
    """Owns the in-memory sessions (the hot cache); the store holds their durable copy."""

    def __init__(self, sessions: Iterable[VehicleSession] = (), *, restored_at: float = 0.0) -> None:
        """sessions: loaded from the store at `restored_at` (the gateway's start). A restored
        online car is timed out from its last envelope, but never sooner than one timeout
        after the start: messages the broker queued while the gateway was down are still to
        come, and must not flap every car offline and online again."""
        self.sessions: dict[str, VehicleSession] = {s.vin: s for s in sessions}
        # vin -> (deadline, connection_id): a will arrived, the car stays online until then (R20)
        self.pending_offline: dict[str, tuple[float, int]] = {}
        self.online_by_bearer: Counter[Bearer] = Counter(
            s.bearer for s in self.sessions.values() if s.presence is Presence.ONLINE
        )
        self._restored_at = restored_at
        self.liveness = LivenessSchedule()
        for s in self.sessions.values():
            if s.presence is Presence.ONLINE:
                self.liveness.watch(s.vin, restored_at)

    @property
    def has_deadlines(self) -> bool:
        """Something may change with time alone (a grace period or a liveness timeout)."""
        return bool(self.pending_offline) or bool(self.liveness)

    def due(self, now: float) -> bool:
        """A grace period or a liveness check is due: the pipeline should tick."""
        return self.liveness.due(now) or any(d <= now for d, _ in self.pending_offline.values())

    def get(self, vin: str) -> VehicleSession | None:
        return self.sessions.get(vin)

    def due_vins(self, now: float) -> set[str]:
        """The cars whose grace period or liveness check is due: a tick may change them. Their
        liveness checks stay due."""
        due = {vin for vin, (deadline, _) in self.pending_offline.items() if deadline <= now}
        for vin in self.liveness.pop_due(now):
            self.liveness.watch(vin, now)
            due.add(vin)
        return due

    def adopt(
        self,
        fresh: Iterable[VehicleSession],
        gone: Iterable[str] = (),
        *,
        now: float,
        pending: Mapping[str, tuple[float, int]] | None = None,
    ) -> None:
        """Replace sessions by their stored copies (several gateways on one store: another one
        wrote them, or this one's apply must be undone; gateway/pipeline.py) and forget `gone`
        (never stored). pending: the grace periods to restore (those before an undone apply).

        What lives in memory only follows: the online count per bearer, the liveness schedule
        (a stored online car is looked at by the next tick, which reckons from its
        last_seen_at), the grace periods (kept only while the stored car is online on the same
        connection) and a refused sequence jump waiting for confirmation (kept for the same
        sequence space)."""
        if pending is not None:
            self.pending_offline = dict(pending)
        for s in fresh:
            old = self.sessions.get(s.vin)
            if old is not None:
                self._count_online(old, -1)
                if old.sequence_epoch == s.sequence_epoch:
                    s.jump_candidate = old.jump_candidate
                if old.previous_epoch == s.previous_epoch:
                    s.previous_jump_candidate = old.previous_jump_candidate
            self.sessions[s.vin] = s
            self._count_online(s, +1)
            if s.presence is Presence.ONLINE:
                self.liveness.watch(s.vin, now)
            grace = self.pending_offline.get(s.vin)
            if grace is not None and (s.presence is not Presence.ONLINE or s.connection_id != grace[1]):
                del self.pending_offline[s.vin]
        for vin in gone:
            old = self.sessions.pop(vin, None)
            if old is not None:
                self._count_online(old, -1)
            self.pending_offline.pop(vin, None)  # the liveness schedule skips unknown cars

    def _count_online(self, s: VehicleSession, delta: int) -> None:
        if s.presence is Presence.ONLINE:
            self.online_by_bearer[s.bearer] += delta

    def _session(self, vin: str) -> VehicleSession:
        s = self.sessions.get(vin)
        if s is None:
            s = self.sessions[vin] = VehicleSession(vin=vin)
        return s

    def _set_presence(self, s: VehicleSession, presence: Presence, now: float) -> None:
        s.snapshot_stale = True
        if s.presence is Presence.ONLINE:
            self.online_by_bearer[s.bearer] -= 1
        if presence is Presence.ONLINE:
            self.online_by_bearer[s.bearer] += 1
            self.liveness.watch(s.vin, now)
        s.presence = presence
        s.presence_changed_at = now

    def _classify(self, s: VehicleSession, env: uplink_pb2.Envelope, hello: bool) -> Arrival:
        s.snapshot_stale = True  # the epoch or the previous space may move (rare: not narrow)
        current = Space(s.sequence_epoch, s.last_sequence, s.seen_window, s.jump_candidate)
        previous = Space(
            s.previous_epoch, s.previous_last_sequence, s.previous_seen_window, s.previous_jump_candidate
        )
        arrival, current, previous = classify_epoch(
            current, previous, env.sequence_epoch, env.sequence, hello=hello
        )
        s.sequence_epoch, s.last_sequence, s.seen_window, s.jump_candidate = (
            current.epoch, current.last, current.window, current.jump,
        )
        s.previous_epoch, s.previous_last_sequence, s.previous_seen_window = (
            previous.epoch, previous.last, previous.window,
        )
        s.previous_jump_candidate = previous.jump
        return arrival

    def apply(self, env: uplink_pb2.Envelope, now: float, *, vin: str = "", body: str = "") -> Tracked:
        """vin, body: the envelope's VIN and body field, when the caller has read them already
        (decode did: each read of a protobuf field builds a new object)."""
        vin = vin or env.vin
        s = self.sessions.get(vin)
        if s is None:
            s = self._session(vin)
        if not body:
            body = env.WhichOneof("body") or ""
        seq, last = env.sequence, s.last_sequence
        if (
            env.sequence_epoch == s.sequence_epoch and last and not s.jump_candidate
            and last < seq <= last + MAX_JUMP
        ):
            # Nearly every message: the next number of the current epoch. The same outcome as
            # classify_epoch (NEW, no jump pending) without building its Space values.
            _, s.last_sequence, s.seen_window = classify(last, s.seen_window, seq)
            result = Tracked(Arrival.NEW, s, [], True)
        else:
            before = _sequence_state(s)
            arrival = self._classify(s, env, body == "hello")
            result = Tracked(arrival, s)
            if arrival is not Arrival.NEW:
                # A late first arrival is recorded in the window: keep that across a restart.
                result.dirty = _sequence_state(s) != before
                return result
            result.dirty = True
        s.last_seen_at = now
        # Any new envelope proves the car is connected now (it can only publish while it is):
        # a grace period ends, and a car marked offline by silence (TIMEOUT) or by a will it
        # published itself comes back (README "MQTT topics", presence).
        if self.pending_offline:  # (nearly always empty: no call then)
            self.pending_offline.pop(vin, None)
        changed = self._apply_header(s, env)
        if changed or body not in _SEQUENCE_ONLY_BODIES or s.presence is not Presence.ONLINE:
            s.snapshot_stale = True  # more than the sequence moves: the store writes it all
        if body == "hello":
            self._apply_hello(s, env.hello, now, result)
            return result  # the ONLINE event carries the whole session; no separate change event
        if s.presence is not Presence.ONLINE and body != "goodbye":
            self._set_presence(s, Presence.ONLINE, now)
            s.offline_reason = OfflineReason.UNSPECIFIED
            result.events.append(SessionEvent(s.vin, now, EventKind.ONLINE, boot=False))
        if body == "state_change":
            new_state = _merge_state(s.state, env.state_change.state, full=False)
            changed += _state_diff(s.state, new_state)
            s.state = new_state
        if changed:
            # After a revival's ONLINE event, before a goodbye's OFFLINE event.
            result.events.append(SessionEvent(s.vin, now, EventKind.STATE_CHANGED, changed=tuple(changed)))
        if body == "goodbye" and s.presence is Presence.ONLINE:
            self._set_presence(s, Presence.OFFLINE, now)
            s.offline_reason = OfflineReason.GOODBYE
            result.events.append(
                SessionEvent(s.vin, now, EventKind.OFFLINE, offline_reason=OfflineReason.GOODBYE)
            )
        return result

    def _apply_header(self, s: VehicleSession, env: uplink_pb2.Envelope) -> list[str]:
        # Every applied envelope passes here and nearly all repeat the session's header: each
        # field is compared as the wire's integer or string first; an enum, a shared value or
        # a Privacy is looked up only when it differs (IntEnums compare equal to their ints).
        changed: list[str] = []
        bearer: int = env.bearer
        if bearer and bearer != s.bearer:  # 0: UNSPECIFIED, the car did not say
            if s.presence is Presence.ONLINE:
                self.online_by_bearer[s.bearer] -= 1
                self.online_by_bearer[Bearer(bearer)] += 1
            s.bearer = Bearer(bearer)
            changed.append("bearer")
        radio: int = env.radio
        if radio and radio != s.radio:
            s.radio = Radio(radio)
            changed.append("radio")
        visited_country = env.visited_country
        if visited_country and visited_country != s.visited_country:
            s.visited_country = compact.text(visited_country)
            changed.append("visited_country")
        visited_mcc = env.visited_mcc
        if visited_mcc and visited_mcc != s.visited_mcc:
            s.visited_mcc = compact.number(visited_mcc)
            changed.append("visited_mcc")
        if env.roaming != s.roaming:
            s.roaming = env.roaming
            changed.append("roaming")
        if env.roaming_enabled != s.roaming_enabled:
            s.roaming_enabled = env.roaming_enabled
            changed.append("roaming_enabled")
        # R22: privacy comes from the car and is refreshed by every envelope. Usually the same
        # shared value as the session's (convert.privacy_from_proto): identity decides then.
        privacy = privacy_from_proto(env.privacy)
        if privacy is not s.privacy:
            if privacy != s.privacy:
                changed.append("privacy")
            # An equal value too (a new session's default, a stored row's): the shared one from
            # now on, so that the next envelope's comparison is by identity.
            s.privacy = privacy
        return changed

    def _apply_hello(
        self, s: VehicleSession, hello: uplink_pb2.Hello, now: float, result: Tracked
    ) -> None:
        self.pending_offline.pop(s.vin, None)  # back within the grace period: never went away
        s.connection_id = hello.connection_id
        # What many cars share is kept once (compact.py): a new str or int per car otherwise.
        s.model = compact.text(hello.model) if hello.model else s.model
        s.model_year = compact.number(hello.model_year) if hello.model_year else s.model_year
        s.home_country = compact.text(hello.home_country) if hello.home_country else s.home_country
        if hello.software_version:
            s.software_version = compact.text(hello.software_version)
        s.heartbeat_interval_s = compact.number(hello.heartbeat_interval_s)
        s.state = _merge_state(s.state, hello.state, full=True)
        if hello.boot:
            s.last_boot_at = now  # R13: services are delivered after a boot while online
        self._set_presence(s, Presence.ONLINE, now)
        s.offline_reason = OfflineReason.UNSPECIFIED
        result.events.append(SessionEvent(s.vin, now, EventKind.ONLINE, boot=hello.boot))

    def apply_will(self, vin: str, connection_id: int, now: float, grace_s: float = 0.0) -> Tracked:
        """The broker published the car's last will: the connection ended without DISCONNECT.

        grace_s > 0 (R20: on 2G data pauses during a phone call): the car stays online until
        ``expire`` runs after the grace period, unless it reconnects first.
        """
        s = self._session(vin)
        result = Tracked(Arrival.NEW, s)
        # A will from an older connection arrives after the car already reconnected (session
        # takeover): it must not mark the new connection offline.
        if s.presence is not Presence.ONLINE or connection_id != s.connection_id:
            result.arrival = Arrival.DUPLICATE
            return result
        if grace_s > 0:
            self.pending_offline[vin] = (now + grace_s, connection_id)
            return result
        return self._connection_lost(s, now, result)

    def expire(self, now: float) -> list[Tracked]:
        """Mark offline the cars whose grace period ran out without a reconnect."""
        due = [vin for vin, (deadline, _) in self.pending_offline.items() if deadline <= now]
        out = []
        for vin in due:
            _, connection_id = self.pending_offline.pop(vin)
            s = self.sessions[vin]
            if s.presence is Presence.ONLINE and s.connection_id == connection_id:
                out.append(self._connection_lost(s, now, Tracked(Arrival.NEW, s)))
        return out

    def expire_silent(self, now: float, timeout_of: Callable[[VehicleSession], float]) -> list[Tracked]:
        """Mark offline (TIMEOUT) the online cars silent for longer than ``timeout_of(car)``."""
        out = []
        for vin in self.liveness.pop_due(now):
            s = self.sessions.get(vin)
            if s is None or s.presence is not Presence.ONLINE:
                continue  # went offline otherwise; the next time it comes online re-arms it
            deadline = max(s.last_seen_at, self._restored_at) + timeout_of(s)
            if deadline > now:
                self.liveness.watch(vin, deadline)
                continue
            self.pending_offline.pop(vin, None)
            out.append(self._went_offline(s, now, OfflineReason.TIMEOUT, Tracked(Arrival.NEW, s)))
        return out

    def _connection_lost(self, s: VehicleSession, now: float, result: Tracked) -> Tracked:
        return self._went_offline(s, now, OfflineReason.CONNECTION_LOST, result)

    def _went_offline(
        self, s: VehicleSession, now: float, reason: OfflineReason, result: Tracked
    ) -> Tracked:
        self._set_presence(s, Presence.OFFLINE, now)
        s.offline_reason = reason
        result.dirty = True
        result.events.append(SessionEvent(s.vin, now, EventKind.OFFLINE, offline_reason=reason))
        return result
