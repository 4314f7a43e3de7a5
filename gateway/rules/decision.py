"""The value every rule returns: which rule decided, what, and why (machine- and human-readable)."""

from __future__ import annotations

import enum
from dataclasses import dataclass

__all__ = ["Decision", "Outcome", "Reason"]


class Outcome(enum.Enum):
    ALLOW = "allow"  # data flows unchanged
    DENY = "deny"  # the service, command or data is refused
    DEFER = "defer"  # held back until a better bearer or place (nothing is dropped)
    REDACT = "redact"  # flows with location and other personal data removed


class Reason(enum.StrEnum):
    """Machine-readable reason codes; stable strings for logs, metrics labels and the API."""

    # R22 privacy
    PRIVACY_OFF = "privacy_off"
    SERVICE_NOT_WITHHELD = "service_not_withheld"
    PRIVACY_ALL_SERVICES = "privacy_all_services"
    PRIVACY_SERVICE_WITHHELD = "privacy_service_withheld"
    PRIVACY_MODE_UNKNOWN = "privacy_mode_unknown"
    PRIVACY_REMOTE_COMMANDS = "privacy_remote_commands"
    # R19-R21, R25 bearer and roaming
    HOME_NETWORK = "home_network"
    ROAMING_FEE_FREE = "roaming_fee_free"
    ROAMING_ALLOWED = "roaming_allowed"
    BEARER_NOT_SUPPORTED = "bearer_not_supported"
    ROAMING_DISABLED = "roaming_disabled"
    IDENTITY_VERIFICATION_REQUIRED = "identity_verification_required"
    PAID_BEARER_BULK = "paid_bearer_bulk"
    # R12 country availability
    SERVICE_OFFERED = "service_offered"
    SERVICE_UNAVAILABLE_IN_COUNTRY = "service_unavailable_in_country"
    # R5, R19-R23 data: no profile for the car's model and model year
    NO_SIM_PROFILE = "no_sim_profile"
    # R7 security code for remote services
    SECURITY_CODE_REQUIRED = "security_code_required"
    SECURITY_CODE_NOT_FOR_MODEL = "security_code_not_for_model"
    SECURITY_CODE_NOT_IN_COUNTRY = "security_code_not_in_country"


@dataclass(frozen=True, slots=True)
class Decision:
    """One rule's verdict. `service` is the service id it concerns, None for the whole car."""

    rule: str  # domain rule id, e.g. "R22"
    outcome: Outcome
    reason: Reason
    detail: str  # one English sentence for logs; user texts come from rules.explain
    service: str | None = None

    @property
    def allowed(self) -> bool:
        return self.outcome is Outcome.ALLOW
