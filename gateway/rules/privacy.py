"""R22: what privacy mode withholds. Pure: the car's reported setting in, a Decision out."""

from __future__ import annotations

from typing import assert_never

from gateway.model import PrivacyMode, VehicleSession
from gateway.rules.decision import Decision, Outcome, Reason

__all__ = ["REMOTE_SERVICES", "privacy_filter", "remote_command_allowed"]

REMOTE_SERVICES = "remote-services"

_RULE = "R22"


def privacy_filter(session: VehicleSession, service: str, personal: bool) -> Decision:
    """May data of `service` leave the gateway as it is?

    ALLOW when privacy is off, when the data holds nothing personal, or when per-service privacy
    does not list `service`; REDACT (strip location and personal fields) otherwise. A car that
    has not reported its setting (UNSPECIFIED) is treated as all-services privacy: fail closed.
    """
    privacy = session.privacy
    match privacy.mode:
        case PrivacyMode.OFF:
            return _allow(Reason.PRIVACY_OFF, "privacy mode is off", service)
        case PrivacyMode.ALL_SERVICES:
            if not personal:
                return _allow(Reason.NOT_PERSONAL, "no personal data in it", service)
            return Decision(
                _RULE, Outcome.REDACT, Reason.PRIVACY_ALL_SERVICES,
                f"privacy mode for all services: personal data of {service} withheld", service,
            )
        case PrivacyMode.PER_SERVICE:
            if service not in privacy.services:
                return _allow(
                    Reason.SERVICE_NOT_WITHHELD, f"per-service privacy does not list {service}",
                    service,
                )
            if not personal:
                return _allow(Reason.NOT_PERSONAL, "no personal data in it", service)
            return Decision(
                _RULE, Outcome.REDACT, Reason.PRIVACY_SERVICE_WITHHELD,
                f"per-service privacy lists {service}: personal data withheld", service,
            )
        case PrivacyMode.UNSPECIFIED:
            if not personal:
                return _allow(Reason.NOT_PERSONAL, "no personal data in it", service)
            return Decision(
                _RULE, Outcome.REDACT, Reason.PRIVACY_MODE_UNKNOWN,
                f"privacy setting not reported: personal data of {service} withheld", service,
            )
        case _:
            assert_never(privacy.mode)


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
