"""Range checks of every uplink field: the second half of ``gateway.decode``.

A message with any value outside its documented range (proto/telematics/v1/uplink.proto and
common.proto say the range of each field) is rejected whole: nothing of it is forwarded, stored
or applied. Decode runs before the session tracker, so a rejected envelope leaves the car's
replay window untouched and its next valid message is served as usual.

Reasons are bounded metric labels (``gateway.metrics.REJECT_REASONS``); the detail names the
field path and what is wrong. It never repeats a location, a free text or an id of the car:
those may be personal (R22) and would make log lines a side channel around privacy mode.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from datetime import UTC, datetime
from functools import lru_cache

from google.protobuf.timestamp_pb2 import Timestamp

from gateway._gen.telematics.v1 import common_pb2, uplink_pb2

# -- the documented limits (README "MQTT topics" -> Validation) --------------------------------
# google.protobuf.Timestamp's own range: 0001-01-01T00:00:00Z .. 9999-12-31T23:59:59Z.
TIMESTAMP_MIN_S = -62_135_596_800
TIMESTAMP_MAX_S = 253_402_300_799
# No connected car of this fleet existed before 2000: an earlier time is a reset clock (e.g. an
# RTC back at 1970 after a battery change), not data worth forwarding.
EARLIEST_S = 946_684_800  # 2000-01-01T00:00:00Z
# A car's clock may run ahead of the gateway's by this much and still be served: clocks that are
# minutes off are normal; an hour ahead is a wrong clock or time zone, and forwarding such times
# would put events in the future for every backend. The past has no such bound: a car may send
# data it buffered while offline (tunnels, parking garages) days later.
MAX_CLOCK_SKEW_S = 3600.0
# A public charging session (R28) longer than a week is a clock error, not a session.
MAX_CHARGING_SESSION_S = 7 * 24 * 3600
# Far above any passenger car's battery (about 100 kWh for a Taycan): one session cannot
# deliver more, so a larger value is a unit error (Wh) or garbage.
MAX_ENERGY_KWH = 1000.0
# Minor units, any currency: far above a real charging bill even in currencies without minor
# units or with a small unit value; bounds garbage such as int64 max before backends sum it.
MAX_COST_MINOR = 10_000_000_000
MAX_SPEED_KMH = 500.0  # above every road car's top speed
MODEL_YEAR_MIN = 1990  # connected services began long after; older is garbage
MODEL_YEARS_AHEAD = 2  # model years run ahead of the calendar (MY2027 is sold in 2026)

MAX_PRIVACY_SERVICES = 64
MAX_SAMPLES = 1000  # a full 64 KiB payload holds about this many located samples
MAX_SIGNALS = 256
MAX_ENTITLEMENT_IDS = 256

MAX_ID = 128  # session, command and entitlement ids: 1..128 printable ASCII, no spaces
MAX_SERVICE_ID = 64
MAX_SIGNAL_NAME = 64
MAX_MODEL = 32
MAX_SOFTWARE_VERSION = 64
MAX_POWER_CLASS = 32
MAX_TEXT = 256  # signal text, location_name, goodbye reason
MAX_ERROR = 1024  # error text of an FoD or command result

_COUNTRY = re.compile(r"[A-Z]{2}")  # ISO 3166-1 alpha-2
_CURRENCY = re.compile(r"[A-Z]{3}")  # ISO 4217 alphabetic code
_ID = re.compile(r"[!-~]+")  # printable ASCII, no space
# The catalogue's service id syntax (gateway/reference/schema.py): lower-case words joined by '-'.
_SERVICE_ID = re.compile(r"[a-z][a-z0-9]*(-[a-z0-9]+)*")
_SIGNAL_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_.-]*")


class Invalid(Exception):
    """A field outside its range. Raised inside this module only; ``check`` returns it."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(reason, detail)
        self.reason = reason  # one of gateway.metrics.REJECT_REASONS
        self.detail = detail


def check(env: uplink_pb2.Envelope, body: str, now: float) -> Invalid | None:
    """The first field of ``env`` outside its range, or None. ``now``: the gateway's clock."""
    try:
        _header(env, now)
        body_check = _BODIES.get(body)
        if body_check is not None:  # a body added later without checks yet: header only
            body_check(env, now)
    except Invalid as bad:
        return bad
    return None


# -- field families ------------------------------------------------------------------------------


def timestamp(path: str, ts: Timestamp, now: float) -> None:
    if not TIMESTAMP_MIN_S <= ts.seconds <= TIMESTAMP_MAX_S or not 0 <= ts.nanos <= 999_999_999:
        raise Invalid("bad_timestamp", f"{path}: not a Timestamp (years 0001..9999, nanos 0..999999999)")
    if ts.seconds < EARLIEST_S:
        raise Invalid("bad_timestamp", f"{path}: {ts.seconds} s is before 2000-01-01 (a reset clock)")
    if ts.seconds > now + MAX_CLOCK_SKEW_S:
        ahead = ts.seconds - int(now)
        detail = f"{path}: {ahead} s ahead of the gateway's clock (at most {MAX_CLOCK_SKEW_S:.0f})"
        raise Invalid("bad_timestamp", detail)


def location(path: str, loc: common_pb2.Location) -> None:
    # The detail never carries the value: a location is personal data (R22).
    if not (math.isfinite(loc.latitude) and -90.0 <= loc.latitude <= 90.0):
        raise Invalid("bad_location", f"{path}.latitude: not a finite number within -90..90")
    if not (math.isfinite(loc.longitude) and -180.0 <= loc.longitude <= 180.0):
        raise Invalid("bad_location", f"{path}.longitude: not a finite number within -180..180")
    if not (math.isfinite(loc.heading_deg) and 0.0 <= loc.heading_deg <= 360.0):
        raise Invalid("bad_location", f"{path}.heading_deg: not a finite number within 0..360")
    if not (math.isfinite(loc.speed_kmh) and 0.0 <= loc.speed_kmh <= MAX_SPEED_KMH):
        raise Invalid("bad_location", f"{path}.speed_kmh: not a finite number within 0..{MAX_SPEED_KMH:.0f}")


def text(path: str, value: str, max_len: int) -> None:
    if len(value) > max_len:
        raise Invalid("bad_string", f"{path}: {len(value)} characters, at most {max_len}")


def ident(path: str, value: str, *, required: bool = True) -> None:
    if not value and not required:
        return
    if not value or len(value) > MAX_ID or not _is_id(value):
        raise Invalid("bad_string", f"{path}: not an id (1..{MAX_ID} printable ASCII characters, no spaces)")


def service_id(path: str, value: str) -> None:
    if len(value) > MAX_SERVICE_ID or not _is_service_id(value):
        raise Invalid(
            "bad_string", f"{path}: not a service id (1..{MAX_SERVICE_ID} of a-z, 0-9 in words joined by '-')"
        )


def country(path: str, value: str) -> None:
    if value and not _is_country(value):
        raise Invalid("bad_country", f"{path}: neither empty nor ISO 3166-1 alpha-2 (two upper-case letters)")


def count(path: str, n: int, limit: int) -> None:
    if n > limit:
        raise Invalid("too_many_items", f"{path}: {n} items, at most {limit}")


# Cached: the same few service ids, signal names and countries arrive millions of times.
@lru_cache(maxsize=4096)
def _is_service_id(value: str) -> bool:
    return _SERVICE_ID.fullmatch(value) is not None


@lru_cache(maxsize=4096)
def _is_signal_name(value: str) -> bool:
    return _SIGNAL_NAME.fullmatch(value) is not None


@lru_cache(maxsize=1024)
def _is_country(value: str) -> bool:
    return _COUNTRY.fullmatch(value) is not None


def _is_id(value: str) -> bool:
    return _ID.fullmatch(value) is not None


# -- the envelope and its bodies -----------------------------------------------------------------


def _header(env: uplink_pb2.Envelope, now: float) -> None:
    # Every message passes here: cheap comparisons first, the detail only on a failure.
    # Absent sent_at is allowed: a car whose clock is not set yet (right after a boot, before
    # network time) sends none rather than a wrong one; backends then see no sent_at.
    # An absent sent_at reads as 0 s, which fails the range: presence is asked only then.
    ts = env.sent_at
    if not (EARLIEST_S <= ts.seconds <= now + MAX_CLOCK_SKEW_S and 0 <= ts.nanos <= 999_999_999) and (
        env.HasField("sent_at")
    ):
        timestamp("sent_at", ts, now)
    visited_country = env.visited_country
    if visited_country and not _is_country(visited_country):
        country("visited_country", visited_country)
    mcc = env.visited_mcc
    if mcc and not 200 <= mcc <= 799:  # ITU-T E.212 geographic MCCs
        raise Invalid("bad_country", f"visited_mcc: {mcc} is neither 0 (unknown) nor 200..799")
    services = env.privacy.services
    if services:
        count("privacy.services", len(services), MAX_PRIVACY_SERVICES)
        for i, s in enumerate(services):
            service_id(f"privacy.services[{i}]", s)


def _hello(env: uplink_pb2.Envelope, now: float) -> None:
    h = env.hello
    text("hello.model", h.model, MAX_MODEL)
    if h.model_year:
        latest = datetime.fromtimestamp(now, UTC).year + MODEL_YEARS_AHEAD
        if not MODEL_YEAR_MIN <= h.model_year <= latest:
            detail = f"hello.model_year: {h.model_year} is neither 0 (unknown) nor {MODEL_YEAR_MIN}..{latest}"
            raise Invalid("bad_model_year", detail)
    country("hello.home_country", h.home_country)
    text("hello.software_version", h.software_version, MAX_SOFTWARE_VERSION)


def _telemetry(env: uplink_pb2.Envelope, now: float) -> None:
    # The hot path (most uplink traffic): each sample is checked inline with cheap comparisons
    # first; the raising checks, which build the field path for the detail, run only on a
    # failure. Absent submessages read as zeros: an absent sampled_at (the time is then the
    # envelope's) fails the range and is told apart by HasField only then; an absent location
    # is all zeros, within every range, as if it were not checked.
    batch = env.telemetry
    service = batch.service
    if len(service) > MAX_SERVICE_ID or not _is_service_id(service):
        service_id("telemetry.service", service)
    samples = batch.samples
    if len(samples) > MAX_SAMPLES:
        count("telemetry.samples", len(samples), MAX_SAMPLES)
    latest = now + MAX_CLOCK_SKEW_S
    is_signal_name, isfinite = _is_signal_name, math.isfinite
    for i, sample in enumerate(samples):
        ts = sample.sampled_at
        if not (EARLIEST_S <= ts.seconds <= latest and 0 <= ts.nanos <= 999_999_999) and (
            sample.HasField("sampled_at")
        ):
            timestamp(f"telemetry.samples[{i}].sampled_at", ts, now)
        loc = sample.location
        # Every comparison with NaN is false and infinities fail the bounds: finite is implied.
        if not (
            -90.0 <= loc.latitude <= 90.0
            and -180.0 <= loc.longitude <= 180.0
            and 0.0 <= loc.heading_deg <= 360.0
            and 0.0 <= loc.speed_kmh <= MAX_SPEED_KMH
        ):
            location(f"telemetry.samples[{i}].location", loc)
        signals = sample.signals
        if len(signals) > MAX_SIGNALS:
            count(f"telemetry.samples[{i}].signals", len(signals), MAX_SIGNALS)
        for j, sig in enumerate(signals):
            kind = sig.WhichOneof("value")
            name = sig.name
            if kind == "number":  # nearly every signal
                if len(name) <= MAX_SIGNAL_NAME and is_signal_name(name) and isfinite(sig.number):
                    continue
            elif (
                kind is not None
                and len(name) <= MAX_SIGNAL_NAME
                and is_signal_name(name)
                and (kind != "text" or len(sig.text) <= MAX_TEXT)
            ):
                continue
            _signal(f"telemetry.samples[{i}].signals[{j}]", sig)


def _signal(path: str, sig: uplink_pb2.Signal) -> None:
    if len(sig.name) > MAX_SIGNAL_NAME or not _is_signal_name(sig.name):
        detail = f"{path}.name: not a signal name (letter, then A-Z a-z 0-9 _ . -; at most {MAX_SIGNAL_NAME})"
        raise Invalid("bad_signal", detail)
    kind = sig.WhichOneof("value")
    if kind is None:
        raise Invalid("bad_signal", f"{path}: has no value")
    if kind == "number" and not math.isfinite(sig.number):
        raise Invalid("bad_signal", f"{path}.number: not a finite number")
    if kind == "text" and len(sig.text) > MAX_TEXT:
        raise Invalid("bad_signal", f"{path}.text: {len(sig.text)} characters, at most {MAX_TEXT}")


def _charging_session(env: uplink_pb2.Envelope, now: float) -> None:
    cs = env.charging_session
    p = "charging_session"
    ident(f"{p}.session_id", cs.session_id)
    # R28: a charging record needs both ends; each must be a sane time, in order.
    for name in ("started_at", "ended_at"):
        if not cs.HasField(name):
            raise Invalid("bad_timestamp", f"{p}.{name}: missing")
    timestamp(f"{p}.started_at", cs.started_at, now)
    timestamp(f"{p}.ended_at", cs.ended_at, now)
    started = (cs.started_at.seconds, cs.started_at.nanos)
    ended = (cs.ended_at.seconds, cs.ended_at.nanos)
    if ended < started:
        raise Invalid("bad_charging_session", f"{p}: ended_at is before started_at")
    if cs.ended_at.seconds - cs.started_at.seconds > MAX_CHARGING_SESSION_S:
        raise Invalid("bad_charging_session", f"{p}: longer than {MAX_CHARGING_SESSION_S // 86400} days")
    if not (math.isfinite(cs.energy_kwh) and 0.0 <= cs.energy_kwh <= MAX_ENERGY_KWH):
        detail = f"{p}.energy_kwh: {cs.energy_kwh!r} is not a finite number within 0..{MAX_ENERGY_KWH:.0f}"
        raise Invalid("bad_charging_session", detail)
    if not 0 <= cs.cost_minor <= MAX_COST_MINOR:
        raise Invalid("bad_charging_session", f"{p}.cost_minor: {cs.cost_minor} is not 0..{MAX_COST_MINOR}")
    # A free session may name no currency; a cost always needs one.
    if (cs.currency or cs.cost_minor) and _CURRENCY.fullmatch(cs.currency) is None:
        raise Invalid("bad_charging_session", f"{p}.currency: not ISO 4217 (three upper-case letters)")
    if cs.HasField("location"):
        location(f"{p}.location", cs.location)
    text(f"{p}.location_name", cs.location_name, MAX_TEXT)
    text(f"{p}.power_class", cs.power_class, MAX_POWER_CLASS)


def _entitlement_ack(env: uplink_pb2.Envelope, now: float) -> None:
    ids = env.entitlement_ack.entitlement_ids
    count("entitlement_ack.entitlement_ids", len(ids), MAX_ENTITLEMENT_IDS)
    for i, eid in enumerate(ids):
        ident(f"entitlement_ack.entitlement_ids[{i}]", eid)


def _fod_result(env: uplink_pb2.Envelope, now: float) -> None:
    r = env.fod_result
    ident("fod_result.command_id", r.command_id)  # the result answers this command
    ident("fod_result.entitlement_id", r.entitlement_id, required=False)
    text("fod_result.error", r.error, MAX_ERROR)


def _command_result(env: uplink_pb2.Envelope, now: float) -> None:
    r = env.command_result
    ident("command_result.command_id", r.command_id)
    text("command_result.error", r.error, MAX_ERROR)


def _goodbye(env: uplink_pb2.Envelope, now: float) -> None:
    text("goodbye.reason", env.goodbye.reason, MAX_TEXT)


_BODIES: dict[str, Callable[[uplink_pb2.Envelope, float], None]] = {
    "hello": _hello,
    "telemetry": _telemetry,
    "charging_session": _charging_session,
    "entitlement_ack": _entitlement_ack,
    "fod_result": _fod_result,
    "command_result": _command_result,
    "goodbye": _goodbye,
    # state_change: enums only (decode's unknown_enum check)
}
