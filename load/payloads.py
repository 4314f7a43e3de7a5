"""Uplink payloads (telematics.v1.Envelope) for the load generator, mostly pre-encoded.

A telemetry envelope is encoded once per car and route point without ``sequence`` and
``sent_at``; per message only those two fields are appended. Protobuf parsers accept fields in
any order and a serialized message followed by more fields is the merged message, so
``prefix + tail`` parses as the complete envelope. The generator thus spends about a
microsecond per message instead of building a protobuf object.
"""

from __future__ import annotations

import math
import random
import time

from gateway._gen.telematics.v1 import common_pb2, uplink_pb2
from gateway.egress.record import pb_varint
from load.fleet import COUNTRIES, Car

TELEMETRY_SERVICE = "remote-services"
HELLO_HEARTBEAT_S = 3600  # gateway/session/liveness.py MAX_HEARTBEAT_S
_RADIO: dict[int, common_pb2.Radio.ValueType] = {
    common_pb2.BEARER_EMBEDDED_SIM: common_pb2.RADIO_4G,
    common_pb2.BEARER_INSERTED_SIM: common_pb2.RADIO_4G,
    common_pb2.BEARER_WIFI_HOTSPOT: common_pb2.RADIO_WIFI,
}


def header(car: Car, seq: int, *, visited: str = "", now_ns: int | None = None) -> uplink_pb2.Envelope:
    """An envelope with the header fields of ``car`` (on its home network unless ``visited``)."""
    country = visited or car.home_country
    env = uplink_pb2.Envelope(
        vin=car.vin,
        sequence=seq,
        bearer=common_pb2.Bearer.ValueType(car.bearer),  # the fleet keeps enum numbers as ints
        radio=_RADIO.get(car.bearer, common_pb2.RADIO_4G),
        visited_country=country,
        visited_mcc=COUNTRIES.get(country, (0,))[0],
        roaming=country != car.home_country,
        roaming_enabled=car.roaming_enabled,
    )
    env.privacy.mode = common_pb2.PRIVACY_MODE_OFF
    env.sent_at.FromNanoseconds(time.time_ns() if now_ns is None else now_ns)
    return env


def hello(car: Car, seq: int, connection_id: int, *, boot: bool, parked: bool = False) -> bytes:
    env = header(car, seq)
    h = env.hello
    h.connection_id = connection_id
    h.boot = boot
    h.model = car.model
    h.model_year = car.model_year
    h.home_country = car.home_country
    h.software_version = car.software_version
    h.state.power = common_pb2.POWER_STATE_OFF if parked else common_pb2.POWER_STATE_ON
    h.state.lock = common_pb2.LOCK_STATE_LOCKED if parked else common_pb2.LOCK_STATE_UNLOCKED
    h.state.charging_plug = common_pb2.CHARGING_PLUG_DISCONNECTED
    # Liveness: the generator's cars send no Heartbeat (the storms hold them online and idle).
    # The longest interval keeps its promise for every run (each lasts minutes, not an hour),
    # so no car is timed out offline mid-scenario (3 intervals: 3 hours).
    h.heartbeat_interval_s = HELLO_HEARTBEAT_S
    return env.SerializeToString()


def goodbye(car: Car, seq: int, reason: str = "ignition off") -> bytes:
    env = header(car, seq)
    env.goodbye.reason = reason
    return env.SerializeToString()


def entitlement_ack(car: Car, seq: int, version: int, entitlement_ids: list[str]) -> bytes:
    """The car installed entitlement set ``version`` with these entitlements (R13)."""
    env = header(car, seq)
    env.entitlement_ack.set_version = version
    env.entitlement_ack.entitlement_ids.extend(entitlement_ids)
    return env.SerializeToString()


def last_will(car: Car, connection_id: int) -> bytes:
    return uplink_pb2.LastWill(vin=car.vin, connection_id=connection_id).SerializeToString()


def _prefix(car: Car, point: int, rng: random.Random, samples: int = 1) -> bytes:
    """The envelope without sequence and sent_at: ``samples`` telemetry samples from route
    point ``point`` on (fixed times and values, so payloads are identical run to run)."""
    env = header(car, 1)
    env.ClearField("sequence")
    env.ClearField("sent_at")
    env.telemetry.service = TELEMETRY_SERVICE
    lat0, lon0 = COUNTRIES[car.home_country][2:]
    for k in range(samples):
        s = env.telemetry.samples.add()
        s.sampled_at.FromSeconds(1_767_225_600 + point * samples + k)
        angle = (point * samples + k) / 8 * 2 * math.pi
        s.location.latitude = round(lat0 + 0.05 * math.sin(angle), 6)
        s.location.longitude = round(lon0 + 0.05 * math.cos(angle), 6)
        s.location.heading_deg = (point * 45) % 360
        s.location.speed_kmh = float(rng.randint(20, 130))
        s.signals.add(name="soc_pct", number=float(rng.randint(15, 95)))
        s.signals.add(name="odometer_km", number=float(rng.randint(1_000, 90_000)))
    return env.SerializeToString()


class TelemetryStream:
    """Telemetry payloads for one car: ``payload(seq, now_ns)`` costs two varints and a join."""

    __slots__ = ("_n", "_prefixes", "_sec", "_sec_bytes")

    def __init__(self, car: Car, points: int = 4, seed: int = 1, samples: int = 1) -> None:
        rng = random.Random(f"{seed}:{car.vin}")
        self._prefixes = [_prefix(car, p, rng, samples) for p in range(points)]
        self._n = points
        self._sec = -1
        self._sec_bytes = b""

    def payload(self, seq: int, now_ns: int) -> bytes:
        sec, nanos = divmod(now_ns, 1_000_000_000)
        if sec != self._sec:
            self._sec, self._sec_bytes = sec, b"\x08" + pb_varint(sec) + b"\x10"
        ts = self._sec_bytes + pb_varint(nanos)
        return b"".join(
            (self._prefixes[seq % self._n], b"\x10", pb_varint(seq), b"\x1a", bytes((len(ts),)), ts)
        )


def sent_at_ns(payload: bytes) -> int:
    """The envelope's sent_at in nanoseconds (0 when absent); for sinks that need only that."""
    env = uplink_pb2.Envelope()
    env.ParseFromString(payload)
    return env.sent_at.seconds * 1_000_000_000 + env.sent_at.nanos
