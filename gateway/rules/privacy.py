"""R22: what privacy mode withholds. Pure: the car's reported setting in, a Decision out.

The decisions written down (README "Rules", privacy bullet):

* A location is personal data whichever service carries it: while privacy mode covers a
  service (all services, per service listing it, or a setting the car never stated: fail
  closed) the location of its telemetry is withheld. No catalogue flag exempts a service.
* Signals can carry a position or something derived from it (``gps.lat``, a geohash, an
  address as text), and the gateway cannot tell from a value. So under privacy only the
  signal names the service catalogue declares not personal (``public_signals``, an allowlist)
  pass; every other signal of the sample is withheld too.
* The visited country and MCC are a coarse network location. They belong to no single
  service, so backend outputs omit them while privacy covers all services or the setting is
  unstated; the gateway still uses them internally for the roaming rules (R12, R19-R21, R25).
* A late envelope is judged by the stricter of its own privacy header (the car's setting when
  it sent it, "updated on every envelope") and the car's current setting.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import assert_never

from gateway.model import Privacy, PrivacyMode, VehicleSession
from gateway.rules.decision import Decision, Outcome, Reason

__all__ = [
    "NETWORK_LOCATION_FIELDS",
    "REMOTE_SERVICES",
    "TelemetryRedaction",
    "privacy_filter",
    "remote_command_allowed",
    "strictest_privacy",
    "telemetry_redaction",
    "withheld_vehicle_fields",
    "withholds_visited_country",
    "without_place",
]

REMOTE_SERVICES = "remote-services"

_RULE = "R22"


def privacy_filter(privacy: Privacy, service: str) -> Decision:
    """May data of `service` leave the gateway as it is?

    ALLOW when privacy is off or per-service privacy does not list `service`; REDACT (withhold
    the location and every signal not declared public) otherwise, whatever the service: a
    position is personal data whichever service carries it. A car that has not reported its
    setting (UNSPECIFIED) is treated as all-services privacy: fail closed.
    """
    match privacy.mode:
        case PrivacyMode.OFF:
            return _allow(Reason.PRIVACY_OFF, "privacy mode is off", service)
        case PrivacyMode.ALL_SERVICES:
            return Decision(
                _RULE, Outcome.REDACT, Reason.PRIVACY_ALL_SERVICES,
                f"privacy mode for all services: location of {service} withheld", service,
            )
        case PrivacyMode.PER_SERVICE:
            if service not in privacy.services:
                return _allow(
                    Reason.SERVICE_NOT_WITHHELD, f"per-service privacy does not list {service}",
                    service,
                )
            return Decision(
                _RULE, Outcome.REDACT, Reason.PRIVACY_SERVICE_WITHHELD,
                f"per-service privacy lists {service}: location withheld", service,
            )
        case PrivacyMode.UNSPECIFIED:
            return Decision(
                _RULE, Outcome.REDACT, Reason.PRIVACY_MODE_UNKNOWN,
                f"privacy setting not reported: location of {service} withheld", service,
            )
        case _:
            assert_never(privacy.mode)


@dataclass(frozen=True, slots=True)
class TelemetryRedaction:
    """What of one telemetry batch may leave the gateway (R22)."""

    decision: Decision
    public_signals: frozenset[str]  # signal names that pass even under privacy

    @property
    def withholds(self) -> bool:
        return self.decision.outcome is Outcome.REDACT

    def keeps_signal(self, name: str) -> bool:
        # R22 fail closed: a signal may carry a position (gps.lat, a geohash, an address), so
        # under privacy only the names the catalogue declares not personal pass.
        return not self.withholds or name in self.public_signals


def telemetry_redaction(
    privacy: Privacy, service: str, public_signals: Iterable[str] = ()
) -> TelemetryRedaction:
    """The R22 redaction of a telemetry batch of `service`. `public_signals`: the catalogue's
    allowlist for the service (empty for a service the catalogue does not know)."""
    return TelemetryRedaction(privacy_filter(privacy, service), frozenset(public_signals))


# The vehicle fields that are a (coarse) location: the country and the MCC of the network.
NETWORK_LOCATION_FIELDS = frozenset({"visited_country", "visited_mcc"})


def withholds_visited_country(privacy: Privacy) -> bool:
    """R22: the visited country and MCC (a coarse network location) stay inside the gateway
    while privacy covers all services or the car never stated its setting (fail closed).
    Per-service privacy names services; the country belongs to none of them. The roaming flag
    (abroad or not, one bit that names no place) still flows: backends need it to explain why
    a service is unavailable."""
    return privacy.mode in (PrivacyMode.ALL_SERVICES, PrivacyMode.UNSPECIFIED)


def withheld_vehicle_fields(privacy: Privacy) -> frozenset[str]:
    """The `telematics.v1.Vehicle` fields (and the names in a state change) that backend
    outputs omit under `privacy` (R22)."""
    return NETWORK_LOCATION_FIELDS if withholds_visited_country(privacy) else frozenset()


def strictest_privacy(*settings: Privacy) -> Privacy:
    """The setting that withholds everything any of `settings` withholds (fail closed).

    R22: a late envelope carries the car's setting at send time; the car's current one may be
    stricter. Judging by the stricter of both never releases what either withholds.
    """
    listed: set[str] = set()
    per_service = False
    for p in settings:
        if p.mode in (PrivacyMode.UNSPECIFIED, PrivacyMode.ALL_SERVICES):
            return p
        if p.mode is PrivacyMode.PER_SERVICE:
            per_service = True
            listed |= p.services
    if per_service:
        return Privacy(PrivacyMode.PER_SERVICE, frozenset(listed))
    return Privacy(PrivacyMode.OFF) if settings else Privacy(PrivacyMode.UNSPECIFIED)


def remote_command_allowed(
    session: VehicleSession, *, service: str = REMOTE_SERVICES
) -> Decision:
    """R22: remote commands (lock, climate, ...) are refused while privacy mode covers `service`
    (all services, per-service listing it, or a setting never reported).
    """
    privacy = session.privacy
    match privacy.mode:
        case PrivacyMode.OFF:
            return _allow(Reason.PRIVACY_OFF, "privacy mode is off", service)
        case PrivacyMode.PER_SERVICE if service not in privacy.services:
            return _allow(
                Reason.SERVICE_NOT_WITHHELD, f"per-service privacy does not list {service}",
                service,
            )
        case PrivacyMode.ALL_SERVICES | PrivacyMode.PER_SERVICE | PrivacyMode.UNSPECIFIED:
            return Decision(
                _RULE, Outcome.DENY, Reason.PRIVACY_REMOTE_COMMANDS,
                f"remote commands refused: privacy mode {privacy.mode.name.lower()}", service,
            )
        case _:
            assert_never(privacy.mode)


def _allow(reason: Reason, detail: str, service: str) -> Decision:
    return Decision(_RULE, Outcome.ALLOW, reason, detail, service)


_PLACE_REASONS = frozenset({
    Reason.SERVICE_OFFERED, Reason.SERVICE_UNAVAILABLE_IN_COUNTRY, Reason.ROAMING_DISABLED,
    Reason.ROAMING_FEE_FREE, Reason.ROAMING_ALLOWED, Reason.PAID_BEARER_BULK,
    Reason.IDENTITY_VERIFICATION_REQUIRED,
})


def without_place(d: Decision) -> Decision:
    """R22: the decision without the visited country in its detail, for whatever leaves the
    gateway (an answer, a log line) while privacy withholds the country. The reason code stays
    (what blocks, machine-readable); the place does not."""
    if d.reason not in _PLACE_REASONS:
        return d
    what = d.reason.value.replace("_", " ")
    return replace(d, detail=f"{what} (visited country withheld: privacy mode, R22)")
