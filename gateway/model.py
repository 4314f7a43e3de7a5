"""Plain domain types shared by every stage. Imports nothing from the gateway.

The enum values mirror the wire enums in proto/telematics/v1 (same numbers), so conversions
are a lookup, not a mapping table to keep in sync by hand (see gateway/api/convert.py).
"""

from __future__ import annotations

import enum
import operator
import re
from dataclasses import dataclass, field, fields

# 17 characters, digits and capitals without I, O and Q (ISO 3779).
VIN_PATTERN = re.compile(r"[A-HJ-NPR-Z0-9]{17}")


def is_valid_vin(vin: str) -> bool:
    return VIN_PATTERN.fullmatch(vin) is not None


class Bearer(enum.IntEnum):
    UNSPECIFIED = 0
    EMBEDDED_SIM = 1
    INSERTED_SIM = 2
    WIFI_HOTSPOT = 3


class Radio(enum.IntEnum):
    UNSPECIFIED = 0
    G2 = 1
    G3 = 2
    G4 = 3
    G5 = 4
    WIFI = 5


class PowerState(enum.IntEnum):
    UNSPECIFIED = 0
    OFF = 1
    ON = 2


class LockState(enum.IntEnum):
    UNSPECIFIED = 0
    UNLOCKED = 1
    LOCKED = 2


class ChargingPlug(enum.IntEnum):
    UNSPECIFIED = 0
    DISCONNECTED = 1
    CONNECTED = 2


class PrivacyMode(enum.IntEnum):
    UNSPECIFIED = 0
    OFF = 1
    ALL_SERVICES = 2
    PER_SERVICE = 3


class Presence(enum.IntEnum):
    UNSPECIFIED = 0
    ONLINE = 1
    OFFLINE = 2


class OfflineReason(enum.IntEnum):
    UNSPECIFIED = 0
    GOODBYE = 1
    CONNECTION_LOST = 2
    NEVER_SEEN = 3
    TIMEOUT = 4  # no envelope within the liveness timeout (gateway/session/liveness.py)


@dataclass(frozen=True, slots=True)
class Privacy:
    mode: PrivacyMode = PrivacyMode.OFF
    services: frozenset[str] = frozenset()

    def withholds(self, service: str) -> bool:
        """True when personal data of `service` must not leave the gateway (R22).

        A car that did not state its privacy setting (UNSPECIFIED) is treated as private for
        all services: with customer data the gateway fails closed.
        """
        if self.mode is PrivacyMode.ALL_SERVICES or self.mode is PrivacyMode.UNSPECIFIED:
            return True
        if self.mode is PrivacyMode.PER_SERVICE:
            return service in self.services
        return False


@dataclass(frozen=True, slots=True)
class VehicleState:
    power: PowerState = PowerState.UNSPECIFIED
    lock: LockState = LockState.UNSPECIFIED
    charging_plug: ChargingPlug = ChargingPlug.UNSPECIFIED
    identity_verified: bool = False


@dataclass(slots=True)
class VehicleSession:
    """The gateway's view of one vehicle. Mutable: owned by the session tracker alone."""

    vin: str
    model: str = ""
    model_year: int = 0
    home_country: str = ""
    visited_country: str = ""
    visited_mcc: int = 0
    bearer: Bearer = Bearer.UNSPECIFIED
    radio: Radio = Radio.UNSPECIFIED
    roaming: bool = False
    roaming_enabled: bool = False
    # Shared defaults, not a new object per session (both are frozen): issue 12, memory per car.
    privacy: Privacy = Privacy()
    state: VehicleState = VehicleState()
    presence: Presence = Presence.OFFLINE
    offline_reason: OfflineReason = OfflineReason.NEVER_SEEN
    presence_changed_at: float = 0.0  # unix seconds
    last_seen_at: float = 0.0
    last_boot_at: float = 0.0
    # The car's current sequence space (gateway/session/sequence.py): its epoch (0: the car
    # predates epochs), the highest sequence seen in it and the replay window.
    sequence_epoch: int = 0
    last_sequence: int = 0
    # Bit i set: sequence (last_sequence - 1 - i) was seen. Detects duplicates of late messages.
    seen_window: int = 0
    # The space the current one replaced (a head-unit reset): redeliveries from before it are
    # still told apart.
    previous_epoch: int = 0
    previous_last_sequence: int = 0
    previous_seen_window: int = 0
    # In memory only: a refused sequence jump waiting for the next envelope to confirm it.
    jump_candidate: int = 0
    previous_jump_candidate: int = 0
    connection_id: int = 0
    software_version: str = ""
    heartbeat_interval_s: int = 0  # announced in the Hello; 0 = none (config default applies)
    # In memory only: a field beyond the sequence (last_sequence, seen_window, last_seen_at)
    # may have changed since the store last took the whole snapshot. Set by the tracker, cleared
    # by the store when it serializes the snapshot; while clear, the store writes the sequence
    # alone (a narrow row update, gateway/store/). A new or restored session counts as changed.
    snapshot_stale: bool = field(default=True, compare=False, repr=False)

    def __copy__(self) -> VehicleSession:
        # The pipeline snapshots a session per message with events (copy.copy). The generic
        # copy of a slots dataclass goes through __reduce_ex__ (~4 us); every field is an
        # immutable value, so a positional rebuild is the same shallow copy at a fifth the cost.
        return VehicleSession(*_SESSION_FIELDS(self))


_SESSION_FIELDS = operator.attrgetter(*(f.name for f in fields(VehicleSession)))
