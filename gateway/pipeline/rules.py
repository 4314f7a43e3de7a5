"""The rules stage: privacy (R22) judged on each applied envelope, and what leaves the gateway
built from it (telemetry records with what privacy withholds stripped, the charging event with
its location cleared, the events as they may go to the event log)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

from gateway._gen.telematics.v1 import common_pb2, telemetry_pb2, uplink_pb2
from gateway.clock import Clock
from gateway.convert import egress_event, privacy_from_proto
from gateway.egress.record import append_records, out_record, service_field
from gateway.model import Privacy, VehicleSession
from gateway.pipeline.batches import Applied
from gateway.reference.store import ReferenceStore
from gateway.rules import (
    Outcome,
    TelemetryRedaction,
    privacy_filter,
    strictest_privacy,
    telemetry_redaction,
)
from gateway.session.events import EventKind, SessionEvent
from gateway.session.sequence import Arrival
from gateway.session.tracker import Tracked

CHARGING_SERVICE = "charging"  # the service whose privacy setting covers charging records (R22, R28)
# Bodies whose content leaves the gateway as is (telemetry records, the charging event).
_EGRESS_BODIES = frozenset({"telemetry", "charging_session"})

# The rule is pure and its inputs few (settings x services x catalogue allowlists): computed
# once per combination, not per message.
_redaction = lru_cache(maxsize=4096)(telemetry_redaction)
_MEMO_LIMIT = 4096  # (privacy, service) pairs remembered per reference snapshot


@dataclass(frozen=True, slots=True)
class _Judged:
    """A telemetry batch's verdict for one (privacy, service): the redaction and the key it is
    counted under in gateway_rule_decisions_total, and the service as encoded in its records
    (built once, not per message)."""

    redaction: TelemetryRedaction
    counted: tuple[str, str]
    service_field: bytes


class RulesStage:
    def __init__(self, *, reference: ReferenceStore, clock: Clock) -> None:
        """reference: the service catalogue (which signals are public). clock: event times."""
        self._reference = reference
        self._clock = clock
        # (privacy, service) -> verdict, for the reference snapshot `_judged_for` (a reload can
        # change a service's public signals: the memo starts afresh with the new snapshot).
        self._judged: dict[tuple[Privacy, str], _Judged] = {}
        self._judged_for: object = None

    def route(self, env: uplink_pb2.Envelope, body: str, t: Tracked, a: Applied) -> None:
        """Judge one applied envelope by privacy mode and add what may leave to `a` (records,
        decisions, withheld counts; a charging event to `t.events`)."""
        session = t.session
        records, decisions = a.records, a.decisions
        # R22: the envelope's own header is the car's setting when it sent it; a late envelope
        # (sequence below the highest) did not update the session, whose current setting may be
        # stricter. Judged by the stricter of both: fail closed.
        # A new envelope has just set the session's setting from its header: the same thing.
        privacy = (
            session.privacy if t.arrival is Arrival.NEW
            else strictest_privacy(privacy_from_proto(env.privacy), session.privacy)
        )
        if body in _EGRESS_BODIES:
            # R22, fail closed: a field this gateway does not know (a newer car's, or a hostile
            # one's) cannot be judged by privacy mode, so it never leaves with the record.
            # Protobuf keeps unknown fields through CopyFrom; dropped here, for the bodies
            # that are forwarded only (about 1 us per envelope, not paid by the others).
            env.DiscardUnknownFields()
        if body == "telemetry":
            batch = env.telemetry
            # R22: a location is personal whatever the service; so may be any signal the
            # catalogue does not declare public. The rule decides, this applies it.
            service = batch.service
            judged = self._judge(privacy, service)
            redaction = judged.redaction
            decisions[judged.counted] += 1
            # A car whose clock is not set sends no sent_at (validate.py): the records then have
            # none either, rather than 1970-01-01 (CopyFrom of an unset field marks it present).
            sent_at = env.sent_at if env.HasField("sent_at") else None
            if not redaction.withholds:
                # Nothing changes the samples: each goes out as its own bytes behind the
                # envelope's fields, encoded once (egress/record.py), no message built.
                append_records(
                    records, env.vin, env.sequence, sent_at, service, judged.service_field,
                    batch.samples,
                )
            else:
                for sample in batch.samples:
                    rec = telemetry_pb2.TelemetryRecord(
                        vin=env.vin, sequence=env.sequence, service=service, sample=sample,
                        sent_at=sent_at,
                    )
                    signals = redact(rec, redaction)
                    if rec.location_withheld or signals:
                        a.withheld_records += 1
                        a.withheld_signals += signals
                    records.append(out_record(rec))
        elif body == "charging_session":
            cs = common_pb2.ChargingSession()
            cs.CopyFrom(env.charging_session)
            decision = privacy_filter(privacy, CHARGING_SERVICE)  # R22 over R28's location
            decisions[decision.rule, decision.outcome.value] += 1
            if decision.outcome is Outcome.REDACT:
                cs.ClearField("location")
                cs.ClearField("location_name")
                a.withheld_records += 1
            t.events.append(
                SessionEvent(
                    session.vin,
                    self._clock.now(),
                    EventKind.CHARGING_SESSION,
                    charging_session=cs.SerializeToString(),
                    dedupe_key=f"charging:{cs.session_id}",
                )
            )

    def _judge(self, privacy: Privacy, service: str) -> _Judged:
        """The verdict for telemetry of `service` under `privacy`: a dict hit per message."""
        current = self._reference.current
        if current is not self._judged_for or len(self._judged) >= _MEMO_LIMIT:
            self._judged.clear()
            self._judged_for = current
        judged = self._judged.get((privacy, service))
        if judged is None:
            redaction = _redaction(privacy, service, self._public_signals(service))
            decision = redaction.decision
            judged = _Judged(
                redaction, (decision.rule, decision.outcome.value), service_field(service)
            )
            self._judged[privacy, service] = judged
        return judged

    def _public_signals(self, service: str) -> tuple[str, ...]:
        known = self._reference.current.service(service)
        return () if known is None else known.public_signals  # unknown service: nothing public


def redact(rec: telemetry_pb2.TelemetryRecord, redaction: TelemetryRedaction) -> int:
    """Strip what privacy withholds from one record (R22): its location (flagged in
    location_withheld) and every signal the catalogue does not declare public. Returns the
    number of signals withheld (also in signals_withheld)."""
    sample = rec.sample
    if sample.HasField("location"):
        sample.ClearField("location")
        rec.location_withheld = True
    public = redaction.public_signals
    kept = [s for s in sample.signals if s.name in public]
    dropped = len(sample.signals) - len(kept)
    if dropped:
        del sample.signals[:]
        sample.signals.extend(kept)
        rec.signals_withheld = dropped
    return dropped


def egress(
    raised: Sequence[SessionEvent], snapshot: VehicleSession
) -> list[tuple[SessionEvent, VehicleSession]]:
    """The events as they may go to the event log (R22, judged with `snapshot`'s privacy),
    each with the session snapshot it is serialized with at the commit."""
    return [(v, snapshot) for e in raised if (v := egress_event(e, snapshot)) is not None]
