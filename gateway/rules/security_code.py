"""R7: does a remote command to this car need the owner's security code?

The source: a security code is required (country-dependent) for some remote services, for the
Taycan and the 911/Cayenne/Panamera from MY2022. Both halves are data: the model half is
`security_code_required` of the car's profile (sim_profiles/), the country half the flag of the
same name in roaming/countries/ (roaming/fallback.toml for an unlisted country).

Which country: the car's home country, the market of the owner's account (R2) whose apps set
the code, not the country the car is parked in. Fail closed where the data cannot tell: an
unknown home country is judged by the fallback, and a car whose model or model year has no
profile needs the code where the country asks for it (the gateway cannot rule out that it is a
Taycan). Every remote command counts as a remote service here: command names are free text and
the source does not say which ones are exempt.
"""

from __future__ import annotations

from gateway.model import VehicleSession
from gateway.reference.schema import Country, SimProfile
from gateway.reference.snapshot import ReferenceData
from gateway.rules.decision import Decision, Outcome, Reason

__all__ = ["code_country", "security_code_decision", "security_code_required"]


def security_code_required(profile: SimProfile | None, country: Country) -> Decision:
    """R7 for one profile (None: no profile covers the car) in the account's country. DENY
    means "not without the code"; ALLOW means no code is needed."""
    where = country.iso or "an unknown country"
    if not country.security_code_required:
        return Decision(
            "R7", Outcome.ALLOW, Reason.SECURITY_CODE_NOT_IN_COUNTRY,
            f"{where} does not use the security code for remote services",
        )
    if profile is None:
        return Decision(
            "R7", Outcome.DENY, Reason.SECURITY_CODE_REQUIRED,
            f"no profile covers the car's model and model year; {where} uses the security code",
        )
    label = f"{profile.model} {profile.years_label()}"
    if not profile.security_code_required:
        return Decision(
            "R7", Outcome.ALLOW, Reason.SECURITY_CODE_NOT_FOR_MODEL,
            f"the {label} has no security code",
        )
    return Decision(
        "R7", Outcome.DENY, Reason.SECURITY_CODE_REQUIRED,
        f"the {label} needs the security code for remote services in {where}",
    )


def code_country(ref: ReferenceData, session: VehicleSession) -> Country:
    """The country whose rule applies: the car's home country (the account's market, R2)."""
    return ref.country(session.home_country)


def security_code_decision(ref: ReferenceData, session: VehicleSession) -> Decision:
    """R7 for a car as the gateway sees it now."""
    profile = ref.profile_for(session.model, session.model_year) if session.model_year > 0 else None
    return security_code_required(profile, code_country(ref, session))
