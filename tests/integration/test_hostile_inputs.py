"""THE table of hostile inputs: every kind of bad input a car, an impostor or a backend can send,
each with the outcome it must have, against one real gateway (real Mosquitto with the project's
ACL, real gRPC, real SQLite).

A row is data: a name, a producer (an async callable that sends the input through a `Harness`)
and the expected outcome:
* `Counted`: the exact change of gateway_messages_{received,rejected,stale}_total, every label
  (so a row also proves that nothing else moved: every message counted once, in its place);
* `NotDelivered`: the broker refuses it (ACL, TLS): the gateway never sees it, nothing moves;
* `Status`: the gRPC status code of the call.
After every row a good car's sentinel must arrive (GetVehicle shows its sequence): one car's bad
input never stops the others being served.

Adding a row is a few lines: write a producer `async def p(h: Harness) -> grpc.StatusCode | None`
and append `Hostile("name", p, rejected("reason"))` to ROWS. Rows run in table order on the
same gateway; a producer leaves the hostile car connected and its sequence counter usable.
gRPC rows use `h.channel`, authenticated as the gateway's admin (`support.gateway_channel`).

"""

from __future__ import annotations

import contextlib
import math
import random
import ssl
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import aiomqtt
import grpc
import pytest
import pytest_asyncio
from support import eventually, free_port, gateway_channel
from test_walking_skeleton import get_vehicle
from vehicle_client import TestVehicle

from gateway import topics
from gateway._gen.telematics.v1 import common_pb2, uplink_pb2, vehicles_pb2, vehicles_pb2_grpc
from gateway.api import limits
from gateway.app import Gateway
from gateway.config import load_config
from gateway.ingress.mqtt5 import Mqtt5Client, MqttConnectError
from gateway.metrics import MESSAGE_KINDS, REJECT_REASONS, STALE_OUTCOMES
from gateway.security import pki
from gateway.session.sequence import MAX_JUMP

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module")]

HOSTILE = "WP0ZZZ99ZTS392124"  # the car that misbehaves (its own topics: the ACL allows them)
GOOD = "WP0ZZZ99ZJS700001"  # a car that behaves; its sentinel follows every row
BAD_SYNTAX = "WP0ZZZ99ZJS70000I"  # I is not a VIN character (ISO 3779)
ONCE_STALE = {"stale:duplicate", "stale:too_old"}  # dropped; the other stale outcomes are served
FAMILIES = {
    "gateway_messages_received_total": "received",
    "gateway_messages_rejected_total": "rejected",
    "gateway_messages_stale_total": "stale",
}


# -- the harness a producer works with -----------------------------------------------------------


@dataclass
class Harness:
    gw: Gateway
    channel: grpc.aio.Channel
    hostile: TestVehicle
    good: TestVehicle

    @property
    def vehicles(self) -> vehicles_pb2_grpc.VehicleServiceStub:
        return vehicles_pb2_grpc.VehicleServiceStub(self.channel)

    async def send(self, payload: bytes | uplink_pb2.Envelope, topic: str = "") -> None:
        """Publish as the hostile car, QoS 1 (the broker has it before this returns)."""
        await self.hostile.publish(payload, topic=topic)

    async def as_client(self, client_id: str, topic: str, payload: bytes) -> None:
        """Publish once from a fresh MQTT client with this client id (the broker's identity for
        the ACL on the plain listener), then disconnect."""
        async with aiomqtt.Client(
            "127.0.0.1", self.gw.config.mqtt_port, identifier=client_id, protocol=aiomqtt.ProtocolVersion.V5
        ) as client:
            await client.publish(topic, payload, qos=1)

    async def vehicle(self, vin: str) -> vehicles_pb2.Vehicle:
        v: vehicles_pb2.Vehicle = await self.vehicles.GetVehicle(vehicles_pb2.GetVehicleRequest(vin=vin))
        return v


# -- expected outcomes ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Counted:
    """The gateway counts it: the change of every received/rejected/stale counter, keyed
    "family:label" (e.g. "rejected:malformed_protobuf"); labels not named must not move.
    at_least: the named deltas are lower bounds (inputs whose count depends on timing, e.g. a
    flood against a token bucket on the real clock); other labels must still not move."""

    deltas: Mapping[str, int]
    at_least: bool = False
    messages: int = 0  # with at_least: how many MQTT messages the row sends (all are awaited)


@dataclass(frozen=True)
class NotDelivered:
    """The broker refuses it (ACL, TLS handshake): the gateway sees nothing, counts nothing."""


@dataclass(frozen=True)
class Status:
    """A gRPC call's status code (and what the producer's own MQTT messages count, if any)."""

    code: grpc.StatusCode
    deltas: Mapping[str, int] = field(default_factory=dict)


Outcome = Counted | NotDelivered | Status
Producer = Callable[[Harness], Awaitable[grpc.StatusCode | None]]


def rejected(reason: str, n: int = 1) -> Counted:
    return Counted({f"rejected:{reason}": n})


def counted(**deltas: int) -> Counted:
    """counted(received_heartbeat=1, stale_duplicate=1): keyword form of the deltas."""
    return Counted({k.replace("_", ":", 1): v for k, v in deltas.items()})


@dataclass(frozen=True)
class Hostile:
    name: str
    produce: Producer
    expect: Outcome
    # An extra check after the outcome (e.g. the car is still online); None: none.
    then: Callable[[Harness], Awaitable[None]] | None = field(default=None)


# -- producers -----------------------------------------------------------------------------------


def _env(h: Harness) -> uplink_pb2.Envelope:
    """The hostile car's next envelope (valid header, no body yet)."""
    return h.hostile.envelope()


def _heartbeat(h: Harness) -> uplink_pb2.Envelope:
    env = _env(h)
    env.heartbeat.SetInParent()
    return env


def _telemetry(h: Harness, lat: float = 48.78, lon: float = 9.18, samples: int = 1) -> uplink_pb2.Envelope:
    env = _env(h)
    env.telemetry.service = "car-finder"
    for _ in range(samples):
        s = env.telemetry.samples.add()
        s.location.latitude, s.location.longitude = lat, lon
    return env


def _charging(h: Harness, energy_kwh: float = 20.0) -> uplink_pb2.Envelope:
    env = _env(h)
    cs = env.charging_session
    now = int(time.time())
    cs.session_id, cs.energy_kwh, cs.currency = "hostile-1", energy_kwh, "EUR"
    cs.started_at.seconds, cs.ended_at.seconds = now - 3600, now - 60
    return env


def send(build: Callable[[Harness], uplink_pb2.Envelope | bytes], topic: str = "") -> Producer:
    async def produce(h: Harness) -> None:
        await h.send(build(h), topic)

    return produce


def raw(build: Callable[[Harness], bytes], topic: Callable[[str], str] = topics.uplink) -> Producer:
    async def produce(h: Harness) -> None:
        await h.send(build(h), topic(HOSTILE))

    return produce


def _set(env: uplink_pb2.Envelope, mutate: Callable[[uplink_pb2.Envelope], object]) -> uplink_pb2.Envelope:
    mutate(env)
    return env


def _truncated(h: Harness) -> bytes:
    data = _telemetry(h, samples=3).SerializeToString()
    return data[: len(data) - 5]  # inside the body's length-delimited field


def _random_bytes(h: Harness) -> bytes:
    # 0xFF starts a tag of wire type 7, which does not exist: never a valid protobuf.
    return b"\xff" + random.Random(9).randbytes(300)


def _bad_utf8(h: Harness) -> bytes:
    env = _env(h)
    env.goodbye.reason = "ab"
    return env.SerializeToString().replace(b"\x02ab", b"\x02\xff\xfe")


def _nested_unknown(depth: int) -> bytes:
    """An unknown length-delimited field (number 99) nested `depth` deep."""
    inner = b""
    for _ in range(depth):
        inner = b"\x9a\x06" + _varint(len(inner)) + inner
    return inner


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b, n = n & 0x7F, n >> 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _unknown_groups(depth: int) -> bytes:
    """An unknown group (field 98) nested `depth` deep."""
    return b"\x93\x06" * depth + b"\x94\x06" * depth


def _twice_the_body(h: Harness) -> bytes:
    """The body field sent twice: protobuf merges them (the sample lists add up)."""
    data = _telemetry(h, samples=600).SerializeToString()
    body = uplink_pb2.Envelope(telemetry=uplink_pb2.TelemetryBatch(service="car-finder"))
    body.telemetry.samples.extend([uplink_pb2.TelemetrySample()] * 600)
    return data + body.SerializeToString()


async def _replayed(h: Harness) -> None:
    env = _heartbeat(h)
    await h.send(env)
    await h.send(env)  # the same sequence again: a replay (or a QoS 1 redelivery)


async def _late(h: Harness) -> None:
    first, second = _heartbeat(h), _heartbeat(h)
    await h.send(second)
    await h.send(first)  # one below the highest and not seen yet: late, its data kept


async def _too_old(h: Harness) -> None:
    h.hostile.sequence += 200  # a gap the car may have (lost QoS 0 telemetry)
    await h.send(_heartbeat(h))
    await h.send(_set(_heartbeat(h), lambda e: setattr(e, "sequence", h.hostile.sequence - 100)))


def _far_future(h: Harness) -> uplink_pb2.Envelope:
    env = _heartbeat(h)
    env.sequence = h.hostile.sequence + MAX_JUMP + 1
    h.hostile.sequence -= 1  # not remembered: the car's next envelope continues below it
    return env


async def _will_of_older_connection(h: Harness) -> None:
    will = uplink_pb2.LastWill(vin=HOSTILE, connection_id=h.hostile.connection_id ^ 1)
    await h.send(will.SerializeToString(), topics.will(HOSTILE))


async def _still_online(h: Harness) -> None:
    assert (await h.vehicle(HOSTILE)).presence == vehicles_pb2.PRESENCE_ONLINE


async def _good_still_online(h: Harness) -> None:
    assert (await h.vehicle(GOOD)).presence == vehicles_pb2.PRESENCE_ONLINE


FLOOD_BURST = 400
FLOOD_MESSAGES = 3 * FLOOD_BURST
HELLO_STORM = 30
FLOODER = "WP0ZZZ99ZJS700002"  # cars of their own: their buckets are theirs alone
STORMER = "WP0ZZZ99ZJS700003"


async def _flood(h: Harness) -> None:
    """One car sends far more than its burst as fast as it can (on the real clock the bucket
    refills 1/s, so at least FLOOD_MESSAGES - FLOOD_BURST - a few are dropped)."""
    car = TestVehicle(FLOODER, h.gw.config.mqtt_port)
    await car.connect()  # its Hello takes one token too
    try:
        for _ in range(FLOOD_MESSAGES):
            await car.heartbeat()
    finally:
        await car.close()


async def _hello_storm(h: Harness) -> None:
    """A reconnect storm as the gateway sees it: one Hello per connection, many in a row."""
    car = TestVehicle(STORMER, h.gw.config.mqtt_port)
    await car.connect()
    try:
        for _ in range(HELLO_STORM):
            env = car.envelope()
            env.hello.connection_id = car.connection_id
            env.hello.model, env.hello.model_year = car.model, car.model_year
            await car.publish(env)
    finally:
        await car.close()


INTRUDER = "WP0ZZZ99ZJS700004"  # holds a valid certificate of its own, wants GOOD's topics


def _tls_context(h: Harness, vin: str | None) -> ssl.SSLContext:
    """Trusts the gateway's development CA; with `vin`, presents that car's certificate."""
    pki_dir = h.gw.config.pki_dir
    context = ssl.create_default_context(cafile=str(pki_dir / "ca.crt"))
    if vin is not None:
        cert, key = pki.issue_car(pki_dir, vin, pki_dir.parent / "hostile-cars")
        context.load_cert_chain(str(cert), str(key))
    return context


async def _another_cars_certificate(h: Harness) -> None:
    """INTRUDER's own certificate, asking for GOOD's client id and publishing on GOOD's topics.
    The broker makes its client id its certificate's VIN (GOOD is not kicked off) and its ACL
    drops the publishes: the gateway sees nothing."""
    forged = TestVehicle(GOOD, 0).envelope()
    forged.hello.connection_id, forged.hello.model, forged.hello.model_year = 1, "911", 2018
    async with aiomqtt.Client(
        "127.0.0.1", h.gw.config.mqtt_tls_port, identifier=GOOD, protocol=aiomqtt.ProtocolVersion.V5,
        tls_context=_tls_context(h, INTRUDER),
    ) as client:
        for topic, payload in ((topics.uplink(GOOD), forged.SerializeToString()),
                               (topics.will(GOOD), uplink_pb2.LastWill(vin=GOOD).SerializeToString())):
            # Refused with a PUBACK reason code (0x87): what the ACL should do.
            with contextlib.suppress(aiomqtt.MqttError):
                await client.publish(topic, payload, qos=1)


async def _no_certificate(h: Harness) -> None:
    client = Mqtt5Client(
        host="127.0.0.1", port=h.gw.config.mqtt_tls_port, client_id=INTRUDER, clean_start=True,
        on_batch=lambda _batch: None, tls=_tls_context(h, None),
    )
    with pytest.raises(MqttConnectError) as refused:
        await client.connect(timeout=10)
    assert "timed out" not in str(refused.value)  # the broker ended it; we did not give up waiting


def grpc_call(call: Callable[[vehicles_pb2_grpc.VehicleServiceStub], Awaitable[object]]) -> Producer:
    async def produce(h: Harness) -> grpc.StatusCode:
        try:
            await call(h.vehicles)
        except grpc.aio.AioRpcError as exc:
            return exc.code()
        return grpc.StatusCode.OK

    return produce


async def _watch_after_the_last_cursor(h: Harness) -> grpc.StatusCode:
    """A cursor beyond every event (uint64 max): the stream waits for newer events; it neither
    fails nor replays. Ended by the test after the good car's sentinel went through."""
    call = h.vehicles.WatchVehicleEvents(vehicles_pb2.WatchVehicleEventsRequest(after_cursor=2**64 - 1))
    await h.good.state(lock=common_pb2.LOCK_STATE_LOCKED)  # an event the stream must not replay
    await eventually(lambda: h.vehicle(GOOD), lambda v: v.last_sequence == h.good.sequence)
    assert not call.done()
    call.cancel()
    return await call.code()


def header(mutate: Callable[[uplink_pb2.Envelope], object]) -> Producer:
    """A heartbeat of the hostile car with its header changed by `mutate`."""
    return send(lambda h: _set(_heartbeat(h), mutate))


def body(mutate: Callable[[uplink_pb2.Envelope], object]) -> Producer:
    """An envelope of the hostile car whose body `mutate` sets."""
    return send(lambda h: _set(_env(h), mutate))


def sample(mutate: Callable[[uplink_pb2.TelemetrySample], object]) -> Producer:
    """A telemetry envelope of the hostile car whose one sample `mutate` changes."""
    return send(lambda h: _set(_telemetry(h), lambda e: mutate(e.telemetry.samples[0])))


def with_suffix(suffix: bytes) -> Producer:
    """A valid heartbeat of the hostile car with `suffix` appended to its bytes."""
    return raw(lambda h: _heartbeat(h).SerializeToString() + suffix)


def vehicles_call(call: Callable[[vehicles_pb2_grpc.VehicleServiceStub], Awaitable[object]]) -> Producer:
    return grpc_call(call)


V = vehicles_pb2
MALFORMED = rejected("malformed_protobuf")
INVALID = Status(grpc.StatusCode.INVALID_ARGUMENT)

ROWS: list[Hostile] = [
    # -- the payload is not an envelope --
    Hostile("truncated_protobuf", raw(_truncated), MALFORMED),
    Hostile("random_bytes", raw(_random_bytes), MALFORMED),
    Hostile("random_bytes_on_the_will_topic", raw(_random_bytes, topics.will), MALFORMED),
    Hostile("invalid_utf8_in_a_string_field", raw(_bad_utf8), MALFORMED),
    # Protobuf parses unknown groups, up to its recursion limit of 100.
    Hostile("unknown_groups_nested_101_deep", with_suffix(_unknown_groups(101)), MALFORMED),
    Hostile(
        "oversize_payload",
        raw(lambda h: b"\x00" * (h.gw.config.max_payload_bytes + 1)),
        rejected("oversize"),
    ),
    # An empty payload is a valid empty Envelope (proto3): its VIN "" is not the topic's.
    Hostile("empty_payload", raw(lambda h: b""), rejected("vin_mismatch")),
    Hostile("empty_will", raw(lambda h: b"", topics.will), rejected("vin_mismatch")),
    # -- identity: topic and envelope --
    Hostile(
        "wrong_vin_syntax_in_the_topic",
        lambda h: h.as_client(BAD_SYNTAX, topics.uplink(BAD_SYNTAX), b"\x0a\x00"),
        rejected("vin_syntax"),
    ),
    Hostile(
        "topic_and_envelope_vin_differ",
        header(lambda e: setattr(e, "vin", GOOD)),
        rejected("vin_mismatch"),
    ),
    Hostile(
        "will_naming_another_vin",
        raw(lambda h: uplink_pb2.LastWill(vin=GOOD, connection_id=1).SerializeToString(), topics.will),
        rejected("vin_mismatch"),
        then=_good_still_online,
    ),
    Hostile("will_from_an_older_connection", _will_of_older_connection, counted(received_will=1),
            then=_still_online),
    # The ACL confines a client to its own VIN's topics: the broker refuses the rest.
    Hostile(
        "publish_on_another_cars_uplink",
        lambda h: h.as_client("impostor-1", topics.uplink(GOOD), _heartbeat(h).SerializeToString()),
        NotDelivered(),
        then=_good_still_online,
    ),
    Hostile(
        "publish_on_another_cars_will",
        lambda h: h.as_client(
            "impostor-2", topics.will(GOOD), uplink_pb2.LastWill(vin=GOOD).SerializeToString()
        ),
        NotDelivered(),
        then=_good_still_online,
    ),
    # bad_topic cannot arrive through the broker: the ACL admits only v1/vehicles/<client id>/up
    # and /will, and the gateway subscribes to nothing else (the unit fuzz covers bad_topic).
    Hostile(
        "topic_outside_v1_vehicles",
        lambda h: h.as_client("impostor-3", "telemetry/raw", b"x"),
        NotDelivered(),
    ),
    Hostile(
        "topic_below_the_uplink",
        lambda h: h.as_client("impostor-4", topics.uplink("impostor-4") + "/x", b"x"),
        NotDelivered(),
    ),
    # -- the envelope's header --
    Hostile("missing_body", send(_env), rejected("missing_body")),
    Hostile("missing_sequence", header(lambda e: setattr(e, "sequence", 0)), rejected("sequence_missing")),
    Hostile("unknown_enum_value", header(lambda e: setattr(e, "bearer", 99)), rejected("unknown_enum")),
    Hostile(
        "unknown_state_enum",
        body(lambda e: setattr(e.state_change.state, "power", 42)),
        rejected("unknown_enum"),
    ),
    Hostile("sent_at_two_hours_ahead",
            header(lambda e: setattr(e.sent_at, "seconds", int(time.time()) + 7200)),  # at send time
            rejected("bad_timestamp")),
    Hostile(
        "sent_at_before_2000",
        header(lambda e: setattr(e.sent_at, "seconds", 1)),
        rejected("bad_timestamp"),
    ),
    Hostile("sent_at_nanos_out_of_range", header(lambda e: setattr(e.sent_at, "nanos", 2_000_000_000)),
            rejected("bad_timestamp")),
    Hostile("visited_country_not_iso", header(lambda e: setattr(e, "visited_country", "Deutschland")),
            rejected("bad_country")),
    Hostile("privacy_service_not_an_id", header(lambda e: e.privacy.services.append("../etc/passwd")),
            rejected("bad_string")),
    # -- the sequence: replay window (gateway/session/sequence.py) --
    Hostile("replayed_sequence", _replayed, counted(received_heartbeat=1, stale_duplicate=1)),
    # A late first arrival delivers its data (received) and changes no state (stale late).
    Hostile("reordered_sequence", _late, counted(received_heartbeat=2, stale_late=1)),
    Hostile("sequence_older_than_the_window", _too_old, counted(received_heartbeat=1, stale_too_old=1)),
    Hostile("far_future_sequence", send(_far_future), rejected("sequence_jump")),
    Hostile("sequence_epoch_without_a_hello", header(lambda e: setattr(e, "sequence_epoch", 777)),
            counted(received_heartbeat=1, stale_other_epoch=1)),
    # -- the body's values --
    Hostile("nan_latitude", send(lambda h: _telemetry(h, lat=math.nan)), rejected("bad_location")),
    Hostile("infinite_longitude", send(lambda h: _telemetry(h, lon=-math.inf)), rejected("bad_location")),
    Hostile("latitude_above_90", send(lambda h: _telemetry(h, lat=90.000001)), rejected("bad_location")),
    Hostile(
        "nan_signal",
        sample(lambda s: s.signals.add(name="soc", number=math.nan)),
        rejected("bad_signal"),
    ),
    Hostile("negative_energy", send(lambda h: _charging(h, -1.0)), rejected("bad_charging_session")),
    Hostile("energy_of_a_power_plant", send(lambda h: _charging(h, 1e9)), rejected("bad_charging_session")),
    Hostile(
        "model_year_3000",
        body(lambda e: setattr(e.hello, "model_year", 3000)),
        rejected("bad_model_year"),
    ),
    Hostile("command_id_with_spaces", body(lambda e: setattr(e.command_result, "command_id", "a b")),
            rejected("bad_string")),
    Hostile("huge_repeated_samples", send(lambda h: _telemetry(h, samples=1001)), rejected("too_many_items")),
    Hostile(
        "huge_repeated_signals",
        sample(lambda s: s.signals.extend([uplink_pb2.Signal(name="s", flag=True)] * 257)),
        rejected("too_many_items"),
    ),
    Hostile("body_field_sent_twice_merges_past_the_limit", raw(_twice_the_body), rejected("too_many_items")),
    # Unknown fields are ignored (proto3: a newer car may send fields this gateway lacks) and
    # never forwarded (tests/unit/pipeline/test_pipeline_privacy.py); a length-delimited one is
    # opaque bytes, however deep its content nests.
    Hostile(
        "unknown_field_nested_1000_deep",
        with_suffix(_nested_unknown(1000)),
        counted(received_heartbeat=1),
    ),
    # -- the backend side: gRPC (gateway/api/limits.py) --
    Hostile(
        "grpc_vin_over_its_limit",
        vehicles_call(lambda s: s.GetVehicle(V.GetVehicleRequest(vin="W" * 18)),
    ),
            INVALID),
    Hostile(
        "grpc_vin_wrong_syntax",
        vehicles_call(lambda s: s.GetVehicle(V.GetVehicleRequest(vin=BAD_SYNTAX)),
    ),
            INVALID),
    Hostile(
        "grpc_command_name_over_its_limit",
        vehicles_call(lambda s: s.SendRemoteCommand(
            V.SendRemoteCommandRequest(vin=GOOD, name="x" * (limits.MAX_COMMAND_NAME_CHARS + 1)))),
        INVALID,
    ),
    Hostile(
        "grpc_too_many_command_arguments",
        vehicles_call(lambda s: s.SendRemoteCommand(V.SendRemoteCommandRequest(
            vin=GOOD, name="lock", arguments={f"k{i}": "v" for i in range(limits.MAX_COMMAND_ARGUMENTS + 1)}
        ))),
        INVALID,
    ),
    Hostile(
        "grpc_request_over_64_kib",
        vehicles_call(lambda s: s.GetVehicle(V.GetVehicleRequest(vin="W" * (limits.MAX_REQUEST_BYTES + 1)))),
        Status(grpc.StatusCode.RESOURCE_EXHAUSTED),
    ),
    Hostile(
        "grpc_page_token_not_issued",
        vehicles_call(lambda s: s.ListVehicles(
            V.ListVehiclesRequest(page_token="A" * limits.MAX_PAGE_TOKEN_CHARS)
        )),
        INVALID,
    ),
    Hostile("grpc_page_size_over_its_limit",
            vehicles_call(lambda s: s.ListVehicles(V.ListVehiclesRequest(page_size=2**31 - 1))), INVALID),
    Hostile("grpc_cursor_uint64_max", _watch_after_the_last_cursor,
            Status(grpc.StatusCode.CANCELLED, {"received:state_change": 1})),
    # -- one car far over its limits (its own buckets; the good car's sentinel still goes through) --
    Hostile("flood", _flood, Counted(
        {"received:hello": 1, "received:heartbeat": 1,
         "rejected:rate_limited": FLOOD_MESSAGES - FLOOD_BURST - 50},
        at_least=True, messages=1 + FLOOD_MESSAGES,
    ), then=_good_still_online),
    # -- identity on the TLS listener (the broker refuses; the gateway sees nothing) --
    Hostile("another_cars_certificate", _another_cars_certificate, NotDelivered(), then=_good_still_online),
    Hostile("no_certificate", _no_certificate, NotDelivered()),
    Hostile("reconnect_storm_of_hellos", _hello_storm, Counted(
        {"received:hello": 1, "rejected:hello_rate_limited": HELLO_STORM + 1 - 10 - 5},
        at_least=True, messages=1 + HELLO_STORM,
    ), then=_good_still_online),
]


# -- running the table ---------------------------------------------------------------------------


def counters(gw: Gateway) -> Counter[str]:
    """Every received/rejected/stale counter of the gateway's registry, keyed "family:label"."""
    out: Counter[str] = Counter()
    for metric in gw.metrics.registry.collect():
        for sample in metric.samples:
            family = FAMILIES.get(sample.name)
            if family is not None:
                [label] = sample.labels.values()
                out[f"{family}:{label}"] = int(sample.value)
    return out


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def harness(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Harness]:
    tmp: Path = tmp_path_factory.mktemp("hostile")
    config = load_config(
        None, env={}, data_dir=str(tmp / "data"), mqtt_port=free_port(), mqtt_tls_port=free_port(),
        grpc_listen="127.0.0.1:0", http_listen="127.0.0.1:0",
        # Per-car limits the other rows stay well under (each car sends a few hundred messages
        # at most) and the flood rows exceed many times over (FLOOD_MESSAGES, HELLO_STORM).
        car_burst=FLOOD_BURST, car_rate_per_s=1.0, car_hello_burst=10, car_hello_rate_per_s=0.1,
    )
    gw = Gateway(config)
    await gw.start()
    hostile = TestVehicle(HOSTILE, config.mqtt_port)
    good = TestVehicle(GOOD, config.mqtt_port)
    try:
        async with gateway_channel(gw) as channel:
            await hostile.connect()
            await good.connect()
            h = Harness(gw, channel, hostile, good)
            # get_vehicle: None (not NOT_FOUND) until the pipeline has processed the Hello.
            await eventually(lambda: get_vehicle(h.vehicles, GOOD),
                             lambda v: v is not None and v.last_sequence == good.sequence)
            await eventually(lambda: get_vehicle(h.vehicles, HOSTILE),
                             lambda v: v is not None and v.last_sequence == hostile.sequence)
            yield h
    finally:
        await hostile.close()
        await good.close()
        await gw.stop()


async def sentinel(h: Harness) -> None:
    """The good car is still served: its next envelope is applied (GetVehicle shows it)."""
    await h.good.heartbeat()
    await eventually(lambda: h.vehicle(GOOD), lambda v: v.last_sequence == h.good.sequence)


@pytest.mark.parametrize("row", ROWS, ids=[r.name for r in ROWS])
async def test_hostile_input_has_its_outcome_and_other_cars_are_still_served(
    harness: Harness, row: Hostile
) -> None:
    h = harness
    before = counters(h.gw)
    code = await row.produce(h)
    await sentinel(h)
    # The sentinel's heartbeat is counted with (or after) the row's messages: wait for it, then
    # the counters of the row are final.
    expected: Counter[str] = Counter({"received:heartbeat": 1})
    if isinstance(row.expect, Counted | Status):
        expected.update(row.expect.deltas)
    if isinstance(row.expect, Status):
        assert code == row.expect.code, f"{row.name}: {code}"
    else:
        assert code is None
    total = sum(expected.values())

    def moved(now: Counter[str]) -> Counter[str]:
        return Counter({k: now[k] - before[k] for k in now if now[k] != before[k]})

    # Lower bounds (at_least) cannot tell when the row is complete: wait until each of the
    # row's messages and the sentinel is accounted for once (served, refused or dropped as
    # stale; late and other_epoch arrivals are served, so they are in `received` already).
    awaited = row.expect.messages + 1 if isinstance(row.expect, Counted) and row.expect.at_least else 0

    def done(d: Counter[str]) -> bool:
        if awaited:
            return sum(n for k, n in d.items() if not k.startswith("stale:") or k in ONCE_STALE) >= awaited
        return sum(d.values()) >= total

    delta = await eventually(lambda: _value(moved(counters(h.gw))), done)
    if isinstance(row.expect, Counted) and row.expect.at_least:
        assert all(delta[k] >= n for k, n in expected.items()), delta
        assert set(delta) == set(expected), delta
    else:
        assert delta == expected, f"{row.name}: counters moved {dict(delta)}, expected {dict(expected)}"
    if row.then is not None:
        await row.then(h)


async def _value(c: Counter[str]) -> Counter[str]:
    return c


async def test_the_table_has_at_least_25_kinds_with_known_labels() -> None:
    names = [r.name for r in ROWS]
    assert len(set(names)) == len(names) >= 25
    known = (
        {f"rejected:{r}" for r in REJECT_REASONS}
        | {f"stale:{o}" for o in STALE_OUTCOMES}
        | {f"received:{k}" for k in MESSAGE_KINDS}
    )
    for row in ROWS:
        if isinstance(row.expect, Counted):
            assert set(row.expect.deltas) <= known, row.name


# Reasons no hostile input can produce through the broker (see the rows above for why).
UNREACHABLE_THROUGH_THE_BROKER = {"bad_topic"}
# Reasons whose count depends on when the broker reloads its ACL, tested on their own:
# `quarantined` in test_quarantine_e2e.py (there the broker's own answers are read).
TESTED_APART = {"quarantined"}


async def test_every_reject_reason_has_a_hostile_row() -> None:
    """A new reason (e.g. rate_limited) needs its row in this table."""
    covered = {k.split(":", 1)[1] for r in ROWS if isinstance(r.expect, Counted) for k in r.expect.deltas
               if k.startswith("rejected:")}
    assert set(REJECT_REASONS) - UNREACHABLE_THROUGH_THE_BROKER - TESTED_APART <= covered


async def test_the_gateway_is_ready_after_the_table(harness: Harness) -> None:
    url = f"http://127.0.0.1:{harness.gw.http_port}/readyz"
    async with aiohttp.ClientSession() as http, http.get(url) as r:
        assert r.status == 200
    await sentinel(harness)
