"""The session stage: the gated messages and what time did (grace periods, liveness timeouts)
applied to the in-memory sessions, with the rules stage judging each applied envelope. Its
output (an `Applied`) is what the batch must write, forward and count once it committed."""

from __future__ import annotations

import copy
import logging
from collections.abc import Sequence
from typing import Protocol

from gateway import topics
from gateway._gen.telematics.v1 import uplink_pb2
from gateway.decode import Decoded, DecodedWill
from gateway.entitlements.vehicle import VehicleUpdate
from gateway.model import VehicleSession
from gateway.pipeline.batches import Applied, LogBudget
from gateway.pipeline.rules import egress
from gateway.reference.store import ReferenceStore
from gateway.rules import offline_grace_s
from gateway.session.liveness import liveness_timeout_s
from gateway.session.sequence import MAX_JUMP, Arrival
from gateway.session.tracker import SessionTracker, Tracked

log = logging.getLogger("gateway.pipeline")


class Rules(Protocol):
    """What the session stage asks of the rules stage (rules.py)."""

    def route(self, env: uplink_pb2.Envelope, body: str, t: Tracked, a: Applied) -> None: ...


class SessionStage:
    def __init__(
        self,
        *,
        tracker: SessionTracker,
        reference: ReferenceStore,
        rules: Rules,
        heartbeat_default_s: float,
        shared: bool,
        log_budget: LogBudget,
    ) -> None:
        """
        tracker: the in-memory sessions (this stage is their only writer besides the refresh).
        reference: the presence grace per bearer and radio (R20).
        heartbeat_default_s: the heartbeat interval of a car whose Hello announces none.
        shared: other gateways write the store too: a TOO_OLD envelope's data is still kept.
        """
        self._tracker = tracker
        self._reference = reference
        self._rules = rules
        self._heartbeat_default_s = heartbeat_default_s
        self._shared = shared
        self._log_budget = log_budget

    def due(self, now: float) -> bool:
        """A grace period or a liveness timeout has run out."""
        return self._tracker.due(now)

    def apply(self, items: Sequence[Decoded | DecodedWill], now: float) -> Applied:
        """Apply the gated messages and what time did (grace periods, liveness timeouts) to the
        sessions; collect what is to be written, forwarded and counted once it committed."""
        a = Applied()
        dirty, events, updates = a.dirty, a.events, a.updates
        tracker = self._tracker
        for expired in tracker.expire(now):
            a.grace["expired"] += 1
            dirty[expired.session.vin] = expired.session
            gone = copy.copy(expired.session)  # as the expiry left it (see below)
            events.extend(egress(expired.events, gone))
            updates.append(VehicleUpdate(gone))
        # Bound once for the loop (the hot path); the tracker's pending_offline is replaced only
        # by adopt, never while a batch is applied.
        pending, route, kinds = tracker.pending_offline, self._rules.route, a.kinds
        new, jump = Arrival.NEW, Arrival.JUMP
        for d in items:
            # The session as this message left it, copied at most once per message (shared by
            # the VehicleUpdate and the events). A shallow copy suffices: every field of
            # VehicleSession is an immutable value (Privacy and VehicleState are frozen).
            snapshot: VehicleSession | None = None
            if isinstance(d, Decoded):
                env, body, vin = d.envelope, d.body, d.vin  # d.vin: the topic's, equal to env.vin
                in_grace = vin in pending
                t = tracker.apply(env, now, vin=vin, body=body)
                if in_grace and vin not in pending:
                    a.grace["reconnected"] += 1
                if t.dirty:
                    dirty[vin] = t.session  # also a late arrival's mark in the window
                if t.arrival is jump:
                    a.rejected["sequence_jump"] += 1
                    if self._log_budget.allow():
                        log.debug(
                            "rejected uplink on %s: sequence_jump: %d is more than %d above the"
                            " highest sequence of its epoch", topics.uplink(env.vin), env.sequence, MAX_JUMP,
                            extra={"event": "uplink_rejected", "reason": "sequence_jump"},
                        )
                    continue
                arrival = t.arrival
                if arrival is not new:  # (the common case tested first: the hot path)
                    if arrival is Arrival.DUPLICATE or (arrival is Arrival.TOO_OLD and not self._shared):
                        a.stale[arrival.value] += 1
                        continue
                    # Late, of another epoch, or TOO_OLD on a shared store: with several
                    # gateways, a slot's backlog (a slot handed over, a dead gateway's queue)
                    # arrives after another gateway moved the car's window far on. The data is
                    # kept, possibly a second time (at least once); the state never applies.
                    a.stale[arrival.value] += 1
                route(env, body, t, a)
                # Only what can move an entitlement: a change of presence, state, link or privacy
                # (the tracker emitted an event) or the car's answers; plain telemetry cannot.
                # R13: a boot reported late (a dead gateway's slot drained after the car's later
                # messages, its state then not applied) is still a boot of a car online now.
                booted = body == "hello" and env.hello.boot and t.arrival is not Arrival.OTHER_EPOCH
                if t.events or booted or body in ("entitlement_ack", "fod_result"):
                    # A copy: the tracker changes sessions in place, and the R17 idle wait must
                    # see every state in between (privacy on and off within one batch).
                    snapshot = copy.copy(t.session)
                    updates.append(
                        VehicleUpdate(
                            snapshot,
                            booted_online=booted,
                            entitlement_ack=env.entitlement_ack if body == "entitlement_ack" else None,
                            fod_result=env.fod_result if body == "fod_result" else None,
                        )
                    )
            else:
                body = "will"
                t = self._apply_will(d.vin, d.connection_id, now, a)
                if t.dirty:
                    dirty[t.session.vin] = t.session
                if t.events:
                    snapshot = copy.copy(t.session)
                    updates.append(VehicleUpdate(snapshot))
            kinds[body] += 1
            if t.events:
                # R22 and "the session right after the event": judged and serialized with a
                # copy of the session as this message left it (the tracker changes sessions in
                # place; a later message of the batch may switch privacy off). One copy per
                # message with events, none for plain telemetry.
                events.extend(egress(t.events, snapshot if snapshot is not None else copy.copy(t.session)))
        # After the batch: a car whose message is in it has spoken and is not timed out.
        for silent in tracker.expire_silent(now, self._liveness_timeout_s):
            a.timeouts += 1
            dirty[silent.session.vin] = silent.session
            gone = copy.copy(silent.session)
            events.extend(egress(silent.events, gone))
            updates.append(VehicleUpdate(gone))
        return a

    def _apply_will(self, vin: str, connection_id: int, now: float, a: Applied) -> Tracked:
        session = self._tracker.get(vin)
        grace = 0.0
        if session is not None:
            # R20: a car on 2G whose data pauses for a call is not flapped offline.
            grace = offline_grace_s(self._reference.current.presence, session.bearer, session.radio)
        t = self._tracker.apply_will(vin, connection_id, now, grace)
        if vin in self._tracker.pending_offline:
            a.grace["started"] += 1
        return t

    def _liveness_timeout_s(self, session: VehicleSession) -> float:
        # R20: the presence grace of the car's bearer and radio on top of its missed heartbeats.
        grace = offline_grace_s(self._reference.current.presence, session.bearer, session.radio)
        return liveness_timeout_s(session.heartbeat_interval_s, self._heartbeat_default_s, grace)
