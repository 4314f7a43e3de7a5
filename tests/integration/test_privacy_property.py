"""R22 end to end: for any sequence of privacy toggles, bearer and country changes, telemetry of
any service (the whole catalogue, including services that carry nothing personal, and one the
catalogue does not know) with any signals, sent in order or late, a location or a signal not
declared public reaches the backend stream exactly when privacy does not cover the service.

The oracle is written here, independently of gateway/rules: privacy covers a service when it
is for all services, unstated (fail closed), or per service listing it; a late envelope is
covered when its own header or the car's setting at its arrival covers it.
"""

from __future__ import annotations

import asyncio
import itertools
from typing import NamedTuple

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support import gateway_channel, telemetry_subscribed
from vehicle_client import TestVehicle

from gateway._gen.telematics.v1 import common_pb2, telemetry_pb2, telemetry_pb2_grpc, uplink_pb2
from gateway.app import Gateway
from gateway.config import PROJECT_ROOT
from gateway.reference import load_reference

pytestmark = pytest.mark.integration

# The shipped catalogue: which signal names a service declares public (R22 allowlist).
_CATALOGUE = load_reference(PROJECT_ROOT).services
PUBLIC = {sid: frozenset(s.public_signals) for sid, s in _CATALOGUE.items()}
UNKNOWN = "x-unknown-service"  # not in the catalogue: nothing of it is public (fail closed)
SERVICES = [*sorted(PUBLIC), UNKNOWN]
MODES = [
    common_pb2.PRIVACY_MODE_UNSPECIFIED,
    common_pb2.PRIVACY_MODE_OFF,
    common_pb2.PRIVACY_MODE_ALL_SERVICES,
    common_pb2.PRIVACY_MODE_PER_SERVICE,
]
# Public for some service, and the kinds of signal that carry a position (number or text).
SIGNALS: dict[str, float | str] = {
    "volume_pct": 40.0, "soc_pct": 80.0, "download_pct": 12.0, "speed_kmh": 50.0,
    "gps.lat": 48.834, "geohash": "u0wt8bj", "address": "Porscheplatz 1, Stuttgart",
}
_vins = itertools.count(1)


class Step(NamedTuple):
    kind: str  # privacy, bearer, country, telemetry, late
    privacy: common_pb2.Privacy  # privacy: the new setting; late: the setting sent after it
    value: int | str  # bearer number or country
    service: str
    signals: tuple[str, ...]


_privacy = st.builds(
    lambda mode, services: common_pb2.Privacy(mode=mode, services=sorted(services)),
    st.sampled_from(MODES), st.frozensets(st.sampled_from(SERVICES), max_size=3),
)
_none = common_pb2.Privacy()
_signals = st.lists(st.sampled_from(sorted(SIGNALS)), max_size=4, unique=True).map(tuple)
step = st.one_of(
    st.builds(Step, st.just("privacy"), _privacy, st.just(0), st.just(""), st.just(())),
    st.builds(Step, st.just("bearer"), st.just(_none), st.sampled_from([1, 2, 3]), st.just(""),
              st.just(())),
    st.builds(Step, st.just("country"), st.just(_none), st.sampled_from(["DE", "AT", "US", "ZZ"]),
              st.just(""), st.just(())),
    st.builds(Step, st.sampled_from(["telemetry", "late"]), _privacy, st.just(0),
              st.sampled_from(SERVICES), _signals),
)


def covers(privacy: common_pb2.Privacy, service: str) -> bool:
    match privacy.mode:
        case common_pb2.PRIVACY_MODE_OFF:
            return False
        case common_pb2.PRIVACY_MODE_PER_SERVICE:
            return service in privacy.services
        case _:  # all services, or unstated: fail closed
            return True


class Seen(NamedTuple):
    location: bool
    signals: tuple[str, ...]
    signals_withheld: int


def expect(covered: bool, service: str, signals: tuple[str, ...]) -> Seen:
    if not covered:
        return Seen(True, signals, 0)
    kept = tuple(n for n in signals if n in PUBLIC.get(service, frozenset()))
    return Seen(False, kept, len(signals) - len(kept))


def telemetry(car: TestVehicle, service: str, signals: tuple[str, ...]) -> uplink_pb2.Envelope:
    env = car.envelope()
    env.telemetry.service = service
    sample = env.telemetry.samples.add()
    sample.location.latitude, sample.location.longitude = 48.834, 9.152
    for name in signals:
        value = SIGNALS[name]
        if isinstance(value, str):
            sample.signals.add(name=name, text=value)
        else:
            sample.signals.add(name=name, number=value)
    return env


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=st.lists(step, min_size=1, max_size=10))
async def test_location_and_private_signals_reach_the_stream_only_when_privacy_allows_them(
    gateway: Gateway, steps: list[Step]
) -> None:
    vin = f"WP0ZZZ99ZPS{next(_vins):06d}"
    async with gateway_channel(gateway) as ch:
        # Taken before the call (grpc.aio may start it at once); compared by identity, since the
        # previous example's subscriber may be leaving while this one arrives.
        before = list(gateway.fanout.subscribers)
        stream = telemetry_pb2_grpc.TelemetryServiceStub(ch).SubscribeTelemetry(
            telemetry_pb2.SubscribeTelemetryRequest()
        )
        reader = asyncio.ensure_future(stream.read())  # starts the call
        await telemetry_subscribed(gateway, before)
        car = TestVehicle(vin, gateway.config.mqtt_port, bearer=common_pb2.BEARER_INSERTED_SIM)
        await car.connect()
        expected: dict[int, Seen] = {}  # sequence -> what the stream may show of it
        for s in steps:
            if s.kind == "privacy":
                car.privacy = s.privacy
            elif s.kind == "bearer":
                car.bearer = int(s.value)
            elif s.kind == "country":
                car.visited_country = str(s.value)
                car.roaming = s.value != car.home_country
            elif s.kind == "telemetry":
                await car.publish(telemetry(car, s.service, s.signals))
                expected[car.sequence] = expect(covers(car.privacy, s.service), s.service, s.signals)
                continue
            else:  # late: sent under the current setting, overtaken by a newer envelope
                late = telemetry(car, s.service, s.signals)
                sent_under = car.privacy
                car.privacy = s.privacy
                await car.state(lock=common_pb2.LOCK_STATE_LOCKED)  # the newer header arrives first
                await car.publish(late)
                covered = covers(sent_under, s.service) or covers(car.privacy, s.service)
                expected[late.sequence] = expect(covered, s.service, s.signals)
                continue
            await car.state(lock=common_pb2.LOCK_STATE_LOCKED)  # carries the new header
        car.privacy = common_pb2.Privacy(mode=common_pb2.PRIVACY_MODE_OFF)
        await car.telemetry("radio-plus")  # end marker
        marker = car.sequence
        got: dict[int, Seen] = {}
        batch = await asyncio.wait_for(reader, 10)
        while True:
            assert isinstance(batch, telemetry_pb2.TelemetryRecords)
            for rec in batch.records:
                if rec.vin == vin:
                    located = rec.sample.HasField("location")
                    got[rec.sequence] = Seen(
                        located, tuple(sig.name for sig in rec.sample.signals), rec.signals_withheld
                    )
                    assert rec.location_withheld == (not located)
            if marker in got:
                break
            batch = await asyncio.wait_for(stream.read(), 10)
        stream.cancel()
        await car.close()
    del got[marker]
    assert got == expected
