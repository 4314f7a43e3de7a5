"""One object per distinct value for what many cars share (issue 12: <= 1 KiB per tracked car).

A million sessions mostly hold the same few models, countries, software versions, model years,
heartbeat intervals, states and privacy settings. Decoded from a message or a stored row, each
would otherwise be a new object per car: a short str costs 50-60 bytes, an int above 256 28, a
VehicleState 64, a Privacy 48 (measured with `python -m load.car_memory`, load/README.md).
Sessions keep the shared object instead; values are immutable, so sharing changes nothing but
memory.

Bounds: interned strings are freed with their last user (CPython's interning is not immortal
for str made at run time), so a car sending odd strings costs no more than before. The int and
privacy tables are bounded; a value beyond the bound is kept as it came (no sharing, no error).
"""

from __future__ import annotations

import sys
from functools import lru_cache

from gateway.model import ChargingPlug, LockState, PowerState, Privacy, PrivacyMode, VehicleState

_MAX_NUMBERS = 4_096
_numbers: dict[int, int] = {}
# Privacy without a service list: one object per mode (the common case, no lookup by services).
_BY_MODE = {mode: Privacy(mode) for mode in PrivacyMode}


def text(value: str) -> str:
    """The one shared copy of `value` (model, country, software version)."""
    return sys.intern(value)


def number(value: int) -> int:
    """The one shared copy of `value` (model year, heartbeat interval, mobile country code).
    CPython shares -5..256 itself; a car's random numbers (epochs, connection ids) are not
    worth a table entry and are not passed here."""
    if -5 <= value <= 256:
        return value
    shared = _numbers.get(value)
    if shared is not None:
        return shared
    if len(_numbers) < _MAX_NUMBERS:
        _numbers[value] = value
    return value


@lru_cache(maxsize=256)  # 3 x 3 x 3 x 2 values in all
def vehicle_state(
    power: PowerState, lock: LockState, charging_plug: ChargingPlug, identity_verified: bool
) -> VehicleState:
    return VehicleState(power, lock, charging_plug, identity_verified)


@lru_cache(maxsize=1_024)
def _per_service(services: frozenset[str]) -> Privacy:
    return Privacy(PrivacyMode.PER_SERVICE, services)


def privacy(mode: PrivacyMode, services: frozenset[str] = frozenset()) -> Privacy:
    """The shared Privacy of `mode`; the service list counts only for PER_SERVICE."""
    if mode is PrivacyMode.PER_SERVICE:
        return _per_service(services)
    return _BY_MODE[mode]
