"""The rules stage alone (gateway/pipeline/rules.py): R22 judged per applied envelope and what
may leave built from it, on a session the tracker produced (no pipeline around it)."""

from __future__ import annotations

from test_pipeline import REFERENCE, VIN, hello, telemetry

from gateway._gen.telematics.v1 import common_pb2, telemetry_pb2, uplink_pb2
from gateway.clock import ManualClock
from gateway.pipeline.batches import Applied
from gateway.pipeline.rules import RulesStage
from gateway.session.events import EventKind, SessionEvent
from gateway.session.tracker import SessionTracker

NOW = 1_767_225_600.0


def sent(a: Applied) -> list[telemetry_pb2.TelemetryRecord]:
    """The records as a consumer parses them from the bytes that leave."""
    return [telemetry_pb2.TelemetryRecord.FromString(r.data) for r in a.records]


def applied_envelope(env: uplink_pb2.Envelope) -> tuple[RulesStage, Applied, list[SessionEvent]]:
    tracker = SessionTracker()
    tracker.apply(uplink_pb2.Envelope.FromString(hello(1).payload), NOW)
    t = tracker.apply(env, NOW)
    rules, a = RulesStage(reference=REFERENCE, clock=ManualClock()), Applied()
    rules.route(env, env.WhichOneof("body") or "", t, a)
    return rules, a, t.events


def test_a_location_is_withheld_from_the_record_while_privacy_covers_all_services() -> None:
    env = uplink_pb2.Envelope.FromString(telemetry(2, common_pb2.PRIVACY_MODE_ALL_SERVICES).payload)
    _, a, _ = applied_envelope(env)
    [record] = sent(a)
    assert record.vin == VIN and record.sequence == 2
    assert record.location_withheld and not record.sample.HasField("location")
    assert a.withheld_records == 1 and sum(a.decisions.values()) == 1


def test_a_location_leaves_with_the_record_while_privacy_is_off() -> None:
    env = uplink_pb2.Envelope.FromString(telemetry(2, common_pb2.PRIVACY_MODE_OFF).payload)
    _, a, _ = applied_envelope(env)
    [record] = sent(a)
    assert not record.location_withheld and record.sample.HasField("location")
    assert a.withheld_records == 0


def test_a_charging_session_under_privacy_becomes_an_event_without_its_location() -> None:
    env = uplink_pb2.Envelope(vin=VIN, sequence=2, bearer=common_pb2.BEARER_EMBEDDED_SIM)
    env.privacy.mode = common_pb2.PRIVACY_MODE_ALL_SERVICES
    env.charging_session.session_id = "cs-1"
    env.charging_session.location.latitude = 48.8
    _, a, events = applied_envelope(env)
    [event] = [e for e in events if e.kind is EventKind.CHARGING_SESSION]
    sent = common_pb2.ChargingSession.FromString(event.charging_session)
    assert sent.session_id == "cs-1" and not sent.HasField("location")
    assert event.dedupe_key == "charging:cs-1" and a.records == [] and a.withheld_records == 1


def test_an_unknown_field_of_a_sample_never_leaves_even_while_privacy_is_off() -> None:
    # R22, fail closed: nothing withholds from the record, so the sample goes out as its bytes;
    # a field this gateway does not know cannot be judged and must not be among them.
    env = uplink_pb2.Envelope.FromString(telemetry(2, common_pb2.PRIVACY_MODE_OFF).payload)
    unknown = b"\x78\x07"  # field 15, a varint: in no message of the envelope
    env.telemetry.samples[0].MergeFromString(unknown)
    env.telemetry.samples[0].location.MergeFromString(unknown)
    _, a, _ = applied_envelope(env)
    [out] = a.records
    parsed = telemetry_pb2.TelemetryRecord.FromString(out.data)
    known_only = telemetry_pb2.TelemetryRecord()
    known_only.CopyFrom(parsed)
    known_only.DiscardUnknownFields()
    assert parsed.sample.HasField("location") and known_only.SerializeToString() == out.data
