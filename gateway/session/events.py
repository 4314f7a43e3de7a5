"""Events the session tracker emits; written to the event log, streamed by Watch."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from gateway.model import OfflineReason


class EventKind(enum.Enum):
    ONLINE = "online"
    OFFLINE = "offline"
    STATE_CHANGED = "state_changed"
    CHARGING_SESSION = "charging_session"


@dataclass(frozen=True, slots=True)
class SessionEvent:
    vin: str
    at: float
    kind: EventKind
    boot: bool = False
    offline_reason: OfflineReason = OfflineReason.UNSPECIFIED
    changed: tuple[str, ...] = ()
    # CHARGING_SESSION only: the serialized telematics.v1.ChargingSession after privacy rules.
    charging_session: bytes = b""
    # Non-empty: written to the log only the first time (R28: a record sent twice counts once).
    dedupe_key: str = ""
