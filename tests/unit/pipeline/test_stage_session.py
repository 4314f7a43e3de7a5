"""The session stage alone (gateway/pipeline/session_stage.py): messages and time applied to the
sessions, with a fake rules stage (satisfying its Rules protocol) that records what it is given."""

from __future__ import annotations

from test_pipeline import REFERENCE, VIN, hello, telemetry

from gateway._gen.telematics.v1 import common_pb2, uplink_pb2
from gateway.decode import Decoded
from gateway.model import Presence
from gateway.pipeline.batches import Applied, LogBudget
from gateway.pipeline.session_stage import Rules, SessionStage
from gateway.session.tracker import SessionTracker, Tracked

NOW = 1_767_225_600.0
HOUR = 3600.0


class RecordingRules:
    def __init__(self) -> None:
        self.routed: list[tuple[int, str]] = []

    def route(self, env: uplink_pb2.Envelope, body: str, t: Tracked, a: Applied) -> None:
        self.routed.append((env.sequence, body))


def decoded(payload: bytes) -> Decoded:
    env = uplink_pb2.Envelope.FromString(payload)
    return Decoded(env.vin, env, env.WhichOneof("body") or "")


def stage(tracker: SessionTracker, rules: Rules) -> SessionStage:
    return SessionStage(tracker=tracker, reference=REFERENCE, rules=rules, heartbeat_default_s=120.0,
                        shared=False, log_budget=LogBudget())


def test_new_messages_are_applied_and_routed_and_a_repeat_is_stale_and_never_routed() -> None:
    tracker, rules = SessionTracker(), RecordingRules()
    session = stage(tracker, rules)
    a = session.apply([decoded(hello(1).payload), decoded(telemetry(2, common_pb2.PRIVACY_MODE_OFF).payload),
                       decoded(telemetry(2, common_pb2.PRIVACY_MODE_OFF).payload)], NOW)
    assert rules.routed == [(1, "hello"), (2, "telemetry")]
    assert a.kinds == {"hello": 1, "telemetry": 1} and a.stale == {"duplicate": 1}
    assert list(a.dirty) == [VIN] and [e.kind.value for e, _ in a.events] == ["online"]
    assert len(a.updates) == 1  # the Hello moved presence; plain telemetry moves no entitlement


def test_a_silent_car_times_out_when_time_alone_is_applied() -> None:
    tracker, rules = SessionTracker(), RecordingRules()
    session = stage(tracker, rules)
    session.apply([decoded(hello(1).payload)], NOW)
    assert not session.due(NOW) and session.due(NOW + HOUR)
    a = session.apply([], NOW + HOUR)
    assert a.timeouts == 1 and [e.kind.value for e, _ in a.events] == ["offline"]
    after = tracker.get(VIN)
    assert after is not None and after.presence is Presence.OFFLINE
    [update] = a.updates
    assert update.session.presence is Presence.OFFLINE and rules.routed == [(1, "hello")]
