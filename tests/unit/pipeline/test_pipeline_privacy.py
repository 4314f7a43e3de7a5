"""R22 at the pipeline: what leaves the gateway (telemetry records, the event log) while the
car's privacy mode covers it. Real SQLite store; the telemetry fan-out is the real one."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeAlias

import pytest

from gateway._gen.telematics.v1 import common_pb2, telemetry_pb2, uplink_pb2, vehicles_pb2
from gateway.clock import ManualClock
from gateway.config import PROJECT_ROOT
from gateway.convert import vehicle_to_api
from gateway.egress.telemetry import TelemetryFanout, TelemetrySubscriber
from gateway.metrics import Metrics
from gateway.pipeline import Pipeline
from gateway.reference import ReferenceStore
from gateway.session.hub import EventHub
from gateway.session.tracker import SessionTracker
from gateway.store.sqlite import SqliteStore

VIN = "WP0ZZZ99ZJS300002"
Mode: TypeAlias = common_pb2.PrivacyMode.ValueType
REFERENCE = ReferenceStore.load(PROJECT_ROOT)  # the shipped catalogue: radio-plus et al.
OFF = common_pb2.PRIVACY_MODE_OFF
ALL = common_pb2.PRIVACY_MODE_ALL_SERVICES
PER_SERVICE = common_pb2.PRIVACY_MODE_PER_SERVICE
UNSPECIFIED = common_pb2.PRIVACY_MODE_UNSPECIFIED
EVERY_SERVICE = ["remote-services", "car-finder", "navigation-plus", "charging", "radio-plus",
                 "voice-pilot", "software-update", "fod-activation", "x-unknown-service"]


@dataclass(frozen=True)
class Msg:
    topic: str
    payload: bytes
    qos: int = 1  # as the broker delivers uplinks to the gateway


@dataclass
class Rig:
    pipeline: Pipeline
    store: SqliteStore
    fanout: TelemetryFanout
    tracker: SessionTracker
    metrics: Metrics

    async def send(self, *envelopes: uplink_pb2.Envelope) -> None:
        await self.pipeline.process(
            [Msg(f"v1/vehicles/{e.vin}/up", e.SerializeToString()) for e in envelopes]
        )

    async def events(self) -> list[vehicles_pb2.VehicleEvent]:
        out = []
        for stored in await self.store.read_events(0, 1000):
            ev = vehicles_pb2.VehicleEvent()
            ev.ParseFromString(stored.payload)
            out.append(ev)
        return out


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    store = SqliteStore(path=tmp_path / "gateway.db")
    await store.open()
    fanout = TelemetryFanout(queue_size=100)
    tracker = SessionTracker()
    metrics = Metrics()
    pipeline = Pipeline(
        tracker=tracker, store=store, hub=EventHub(), telemetry=fanout, metrics=metrics,
        clock=ManualClock(), reference=REFERENCE, max_payload_bytes=65536, queue_messages=100,
        ack=lambda _m: None, pause_reading=lambda: None, resume_reading=lambda: None,
    )
    yield Rig(pipeline, store, fanout, tracker, metrics)
    await store.close()


def envelope(
    seq: int, mode: Mode = OFF, services: tuple[str, ...] = (), country: str = "DE", mcc: int = 262
) -> uplink_pb2.Envelope:
    env = uplink_pb2.Envelope(
        vin=VIN, sequence=seq, bearer=common_pb2.BEARER_EMBEDDED_SIM, visited_country=country,
        visited_mcc=mcc, roaming=country != "DE",
    )
    env.privacy.mode = mode
    env.privacy.services.extend(services)
    return env


def header(
    seq: int, mode: Mode = OFF, services: tuple[str, ...] = (), country: str = "DE", mcc: int = 262
) -> uplink_pb2.Envelope:
    """A state change: it carries the header (privacy, country) and changes nothing else."""
    env = envelope(seq, mode, services, country, mcc)
    env.state_change.state.lock = common_pb2.LOCK_STATE_LOCKED
    return env


def hello(seq: int = 1, mode: Mode = OFF, country: str = "DE", mcc: int = 262) -> uplink_pb2.Envelope:
    env = envelope(seq, mode, country=country, mcc=mcc)
    env.hello.connection_id = 1
    env.hello.model, env.hello.model_year, env.hello.home_country = "Taycan", 2022, "DE"
    return env


def telemetry(
    seq: int, service: str, mode: Mode, services: tuple[str, ...] = (),
    signals: tuple[tuple[str, float | str], ...] = (),
) -> uplink_pb2.Envelope:
    env = envelope(seq, mode, services)
    env.telemetry.service = service
    sample = env.telemetry.samples.add()
    sample.location.latitude, sample.location.longitude = 48.834, 9.152
    for name, value in signals:
        if isinstance(value, str):
            sample.signals.add(name=name, text=value)
        else:
            sample.signals.add(name=name, number=value)
    return env


def charging(seq: int, mode: Mode, services: tuple[str, ...] = ()) -> uplink_pb2.Envelope:
    env = envelope(seq, mode, services)
    cs = env.charging_session
    cs.session_id, cs.location_name, cs.energy_kwh = f"cs-{seq}", "Porscheplatz 1, Stuttgart", 42.0
    cs.location.latitude, cs.location.longitude = 48.834, 9.152
    # A valid session (gateway/validate.py): it ended an hour before the rig's clock starts.
    start = int(ManualClock().now()) - 7_200
    cs.started_at.seconds, cs.ended_at.seconds = start, start + 3_600
    cs.currency = "EUR"
    return env


def records(sub: TelemetrySubscriber) -> list[telemetry_pb2.TelemetryRecord]:
    out: list[telemetry_pb2.TelemetryRecord] = []
    while not sub.queue.empty():
        batch = sub.queue.get_nowait()
        assert batch is not None
        out.extend(telemetry_pb2.TelemetryRecords.FromString(batch).records)
    return out


@pytest.mark.parametrize("service", EVERY_SERVICE)
@pytest.mark.parametrize("mode", [ALL, UNSPECIFIED])
async def test_location_is_withheld_for_every_service_in_all_services_privacy(
    rig: Rig, service: str, mode: Mode
) -> None:
    # The report: radio-plus (personal_data=false in the catalogue) leaked its position.
    sub = rig.fanout.subscribe(frozenset())
    await rig.send(hello(1, mode), telemetry(2, service, mode))
    [rec] = records(sub)
    assert not rec.sample.HasField("location") and rec.location_withheld


@pytest.mark.parametrize("service", EVERY_SERVICE)
async def test_location_is_withheld_for_a_service_listed_in_per_service_privacy(
    rig: Rig, service: str
) -> None:
    sub = rig.fanout.subscribe(frozenset())
    await rig.send(hello(1), telemetry(2, service, PER_SERVICE, (service,)),
                   telemetry(3, service, PER_SERVICE, ("some-other-service",)))
    listed, unlisted = records(sub)
    assert not listed.sample.HasField("location") and listed.location_withheld
    assert unlisted.sample.HasField("location") and not unlisted.location_withheld


async def test_signals_not_declared_public_are_withheld_and_counted_in_privacy_mode(
    rig: Rig,
) -> None:
    sub = rig.fanout.subscribe(frozenset())
    signals = (("volume_pct", 40.0), ("gps.lat", 48.834), ("geohash", "u0wt8"),
               ("station", "SWR3 Stuttgart"))
    await rig.send(hello(1), telemetry(2, "radio-plus", ALL, signals=signals),
                   telemetry(3, "x-unknown-service", ALL, signals=signals))
    radio, unknown = records(sub)
    # radio-plus declares volume_pct public (roaming/services.toml); nothing else passes.
    assert [s.name for s in radio.sample.signals] == ["volume_pct"]
    assert radio.signals_withheld == 3
    assert list(unknown.sample.signals) == [] and unknown.signals_withheld == 4  # fail closed
    assert rig.metrics.privacy_withheld_signals._value.get() == 7


async def test_every_signal_flows_while_privacy_is_off(rig: Rig) -> None:
    sub = rig.fanout.subscribe(frozenset())
    await rig.send(hello(1), telemetry(2, "radio-plus", OFF, signals=(("gps.lat", 48.834),)))
    [rec] = records(sub)
    assert [s.name for s in rec.sample.signals] == ["gps.lat"] and rec.signals_withheld == 0
    assert rec.sample.HasField("location")


async def test_late_telemetry_sent_in_privacy_is_withheld_although_privacy_is_off_now(
    rig: Rig,
) -> None:
    # R22: the late envelope's own header says privacy was on when the car sent it.
    sub = rig.fanout.subscribe(frozenset())
    await rig.send(hello(1), header(5, OFF))
    await rig.send(telemetry(3, "car-finder", ALL, signals=(("gps.lat", 48.834),)))
    [rec] = records(sub)
    assert not rec.sample.HasField("location") and rec.location_withheld
    assert list(rec.sample.signals) == []


async def test_late_telemetry_is_withheld_when_privacy_is_on_now(rig: Rig) -> None:
    # The car has switched privacy on since: the stricter setting judges (fail closed).
    sub = rig.fanout.subscribe(frozenset())
    await rig.send(hello(1), header(5, ALL))
    await rig.send(telemetry(3, "radio-plus", OFF))
    [rec] = records(sub)
    assert not rec.sample.HasField("location") and rec.location_withheld


@pytest.mark.parametrize(
    ("mode", "listed"), [(ALL, ()), (UNSPECIFIED, ()), (PER_SERVICE, ("charging",))]
)
async def test_charging_record_location_is_withheld_while_privacy_covers_charging(
    rig: Rig, mode: Mode, listed: tuple[str, ...]
) -> None:
    await rig.send(hello(1), charging(2, mode, listed))
    [rec] = [e.charging_session.session for e in await rig.events() if e.HasField("charging_session")]
    assert not rec.HasField("location") and rec.location_name == ""
    assert rec.energy_kwh == 42.0  # R28: the record itself is carried


async def test_charging_record_location_flows_when_per_service_privacy_omits_charging(
    rig: Rig,
) -> None:
    await rig.send(hello(1), charging(2, PER_SERVICE, ("car-finder",)))
    [rec] = [e.charging_session.session for e in await rig.events() if e.HasField("charging_session")]
    assert rec.HasField("location") and rec.location_name


async def test_late_charging_record_sent_in_privacy_is_withheld_although_privacy_is_off_now(
    rig: Rig,
) -> None:
    await rig.send(hello(1), header(5, OFF))
    await rig.send(charging(3, ALL))
    [rec] = [e.charging_session.session for e in await rig.events() if e.HasField("charging_session")]
    assert not rec.HasField("location") and rec.location_name == ""


async def test_late_charging_record_is_withheld_when_privacy_is_on_now(rig: Rig) -> None:
    await rig.send(hello(1), header(5, PER_SERVICE, ("charging",)))
    await rig.send(charging(3, OFF))
    [rec] = [e.charging_session.session for e in await rig.events() if e.HasField("charging_session")]
    assert not rec.HasField("location") and rec.location_name == ""


@pytest.mark.parametrize("mode", [ALL, UNSPECIFIED])
async def test_events_never_carry_the_visited_country_in_all_services_privacy(
    rig: Rig, mode: Mode
) -> None:
    await rig.send(hello(1, mode, country="AT", mcc=232), header(2, mode, country="CH", mcc=228))
    await rig.send(header(3, mode, country="IT", mcc=222))  # only a border crossing
    events = await rig.events()
    assert events  # the ONLINE event at least
    for ev in events:
        assert (ev.vehicle.visited_country, ev.vehicle.visited_mcc) == ("", 0)
        assert not {"visited_country", "visited_mcc"} & set(ev.state_changed.changed)
    # The last crossing was the only change: no event tells of it at all.
    assert [ev.WhichOneof("kind") for ev in events] == ["online", "state_changed"]
    assert list(events[-1].state_changed.changed) == ["state.lock"]
    # Inside, the gateway still knows where the car is (R12, R21 need it).
    session = rig.tracker.get(VIN)
    assert session is not None and session.visited_country == "IT"


async def test_events_carry_the_visited_country_while_privacy_is_off(rig: Rig) -> None:
    await rig.send(hello(1, OFF, country="AT", mcc=232), header(2, OFF, country="CH", mcc=228))
    last = (await rig.events())[-1]
    assert (last.vehicle.visited_country, last.vehicle.visited_mcc) == ("CH", 228)
    assert "visited_country" in last.state_changed.changed


async def test_border_crossed_in_privacy_is_not_told_when_privacy_ends_in_the_same_batch(
    rig: Rig,
) -> None:
    # Judged with the setting at the event's time: the crossing happened in privacy mode.
    await rig.send(hello(1, ALL, country="AT"), header(2, ALL, country="CH"), header(3, OFF, country="CH"))
    for ev in await rig.events():
        assert "visited_country" not in ev.state_changed.changed


@pytest.mark.parametrize(
    ("mode", "hidden"), [(ALL, True), (UNSPECIFIED, True), (PER_SERVICE, False), (OFF, False)]
)
async def test_vehicle_snapshot_for_backends_omits_the_visited_country_in_privacy(
    rig: Rig, mode: Mode, hidden: bool
) -> None:
    await rig.send(hello(1, mode, country="AT", mcc=232))
    session = rig.tracker.get(VIN)
    assert session is not None
    v = vehicle_to_api(session)
    assert (v.visited_country, v.visited_mcc) == (("", 0) if hidden else ("AT", 232))
    assert v.roaming  # one bit, names no place: backends need it to explain unavailability


async def test_event_snapshot_is_the_session_right_after_its_event_not_at_the_end_of_the_batch(
    rig: Rig,
) -> None:
    # R22 and the proto's "the session right after the event": a crossing made in privacy mode
    # must not be serialized with a session whose privacy was switched off later in the batch.
    crossing = header(2, ALL, country="CH", mcc=228)
    crossing.state_change.state.lock = common_pb2.LOCK_STATE_UNLOCKED
    later = header(3, OFF, country="CH", mcc=228)  # privacy off, locked: after the crossing
    await rig.send(hello(1, ALL, country="AT", mcc=232), crossing, later)
    events = await rig.events()
    assert [ev.WhichOneof("kind") for ev in events] == ["online", "state_changed", "state_changed"]
    online, during, after = events
    for ev in (online, during):
        assert ev.vehicle.privacy.mode == ALL
        assert (ev.vehicle.visited_country, ev.vehicle.visited_mcc) == ("", 0)
    assert online.vehicle.state.lock == common_pb2.LOCK_STATE_UNSPECIFIED
    assert during.vehicle.state.lock == common_pb2.LOCK_STATE_UNLOCKED
    assert after.vehicle.privacy.mode == OFF and after.vehicle.visited_country == "CH"
    assert after.vehicle.state.lock == common_pb2.LOCK_STATE_LOCKED
    assert after.vehicle.last_sequence == 3 and during.vehicle.last_sequence == 2


async def test_offline_event_of_an_expired_grace_keeps_its_snapshot_when_the_car_returns(
    rig: Rig,
) -> None:
    # The grace expiry runs at the start of a batch; a Hello later in it must not rewrite the
    # OFFLINE event's vehicle into ONLINE.
    rig.tracker.apply(hello(1), 0.0)
    rig.tracker.pending_offline[VIN] = (0.0, 1)  # a will's grace period that has run out
    await rig.send(hello(2))
    offline, online = (await rig.events())[-2:]
    assert offline.WhichOneof("kind") == "offline"
    assert offline.vehicle.presence == vehicles_pb2.PRESENCE_OFFLINE
    assert online.WhichOneof("kind") == "online"
    assert online.vehicle.presence == vehicles_pb2.PRESENCE_ONLINE


# A field number no message of this gateway's schema uses, holding a marker: what a newer car
# (or a hostile one) may add. The gateway cannot judge it under R22, so it must not pass it on.
UNKNOWN_FIELD = b"\x9a\x06\x0bprecise-geo"  # field 99, length-delimited


async def test_fields_unknown_to_the_gateway_are_never_forwarded_in_telemetry_or_the_event_log(
    rig: Rig,
) -> None:
    tele = telemetry(2, "car-finder", OFF)
    tele.telemetry.samples[0].MergeFromString(UNKNOWN_FIELD)
    tele.telemetry.samples[0].location.MergeFromString(UNKNOWN_FIELD)
    tele.sent_at.seconds = int(ManualClock().now()) - 10
    tele.sent_at.MergeFromString(UNKNOWN_FIELD)
    cs = charging(3, OFF)
    cs.charging_session.MergeFromString(UNKNOWN_FIELD)
    cs.charging_session.location.MergeFromString(UNKNOWN_FIELD)
    assert b"precise-geo" in tele.SerializeToString()  # the car did send it
    sub = rig.fanout.subscribe(frozenset())
    await rig.send(hello(1), tele, cs)
    [rec] = records(sub)
    assert rec.sample.location.latitude == 48.834  # the known fields flow (privacy is off)
    assert b"precise-geo" not in rec.SerializeToString()
    [event] = [e for e in await rig.events() if e.HasField("charging_session")]
    assert event.charging_session.session.energy_kwh == 42.0
    assert b"precise-geo" not in event.SerializeToString()
