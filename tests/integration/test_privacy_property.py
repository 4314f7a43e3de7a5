"""R22 end to end: for any sequence of privacy toggles, bearer and country changes and
telemetry, a location reaches the backend stream exactly when privacy does not withhold it."""

from __future__ import annotations

import asyncio
import itertools

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from vehicle_client import TestVehicle

from gateway._gen.telematics.v1 import common_pb2, telemetry_pb2, telemetry_pb2_grpc
from gateway.app import Gateway

pytestmark = pytest.mark.integration

# The service catalogue's personal_data flag; an unknown service fails closed.
PERSONAL = {"car-finder": True, "radio-plus": False, "x-unknown-service": True}
SERVICES = sorted(PERSONAL)
MODES = [
    common_pb2.PRIVACY_MODE_OFF,
    common_pb2.PRIVACY_MODE_ALL_SERVICES,
    common_pb2.PRIVACY_MODE_PER_SERVICE,
]
_vins = itertools.count(1)

Step = tuple[str, int | str, frozenset[str]]  # (what changes, its value, privacy services)
step: st.SearchStrategy[Step] = st.one_of(
    st.tuples(st.just("privacy"), st.sampled_from(MODES), st.frozensets(st.sampled_from(SERVICES))),
    st.tuples(st.just("bearer"), st.sampled_from([1, 2, 3]), st.just(frozenset())),
    st.tuples(st.just("country"), st.sampled_from(["DE", "AT", "US", "ZZ"]), st.just(frozenset())),
    st.tuples(st.just("telemetry"), st.sampled_from(range(len(SERVICES))), st.just(frozenset())),
)


def withheld(privacy: common_pb2.Privacy, service: str) -> bool:
    if privacy.mode == common_pb2.PRIVACY_MODE_ALL_SERVICES:
        return True
    return privacy.mode == common_pb2.PRIVACY_MODE_PER_SERVICE and service in privacy.services


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=st.lists(step, min_size=1, max_size=10))
async def test_location_reaches_the_stream_only_when_privacy_allows_it(
    gateway: Gateway, steps: list[Step]
) -> None:
    vin = f"WP0ZZZ99ZPS{next(_vins):06d}"
    async with grpc.aio.insecure_channel(f"127.0.0.1:{gateway.grpc_port}") as ch:
        # Taken before the call (grpc.aio may start it at once); compared by identity, since the
        # previous example's subscriber may be leaving while this one arrives.
        before = list(gateway.fanout.subscribers)
        stream = telemetry_pb2_grpc.TelemetryServiceStub(ch).SubscribeTelemetry(
            telemetry_pb2.SubscribeTelemetryRequest()
        )
        reader = asyncio.ensure_future(stream.read())  # starts the call
        while all(sub in before for sub in gateway.fanout.subscribers):  # noqa: ASYNC110
            await asyncio.sleep(0.01)
        car = TestVehicle(vin, gateway.config.mqtt_port, bearer=common_pb2.BEARER_INSERTED_SIM)
        await car.connect()
        expected: dict[int, bool] = {}  # sequence -> location expected on the stream
        for kind, value, services in steps:
            if kind == "privacy":
                mode = common_pb2.PrivacyMode.ValueType(int(value))
                car.privacy = common_pb2.Privacy(mode=mode, services=sorted(services))
            elif kind == "bearer":
                car.bearer = int(value)
            elif kind == "country":
                car.visited_country = str(value)
                car.roaming = value != car.home_country
            else:
                service = SERVICES[int(value)]
                await car.telemetry(service)
                expected[car.sequence] = not (withheld(car.privacy, service) and PERSONAL[service])
                continue
            await car.state(lock=common_pb2.LOCK_STATE_LOCKED)  # carries the new header
        car.privacy = common_pb2.Privacy(mode=common_pb2.PRIVACY_MODE_OFF)
        await car.telemetry("radio-plus")  # end marker
        marker = car.sequence
        got: dict[int, bool] = {}
        batch = await asyncio.wait_for(reader, 10)
        while True:
            for rec in batch.records:
                if rec.vin == vin:
                    got[rec.sequence] = rec.sample.HasField("location")
                    assert rec.location_withheld == (not got[rec.sequence])
            if marker in got:
                break
            batch = await asyncio.wait_for(stream.read(), 10)
        stream.cancel()
        await car.close()
    del got[marker]
    assert got == expected
