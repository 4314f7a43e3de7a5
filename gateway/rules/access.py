"""R12, R19-R21, R25: may a service use the car's current bearer in the country it is in?"""

from __future__ import annotations

from gateway.model import Bearer, VehicleSession
from gateway.reference.schema import Country, Service, SimProfile
from gateway.rules.decision import Decision, Outcome, Reason

__all__ = ["SIM_BEARERS", "is_abroad", "service_access", "service_available"]

# R21: the head unit's roaming switch governs the car's own modem, i.e. both SIM bearers; over a
# hotspot the phone roams (its own setting, its own bill).
SIM_BEARERS = frozenset({Bearer.EMBEDDED_SIM, Bearer.INSERTED_SIM})


def is_abroad(session: VehicleSession, country: Country) -> bool:
    """The car is outside its home country: compare ISO codes when both are known, else trust
    the car's own roaming flag.
    """
    home = session.home_country.strip().upper()
    if home and country.iso:
        return country.iso != home
    return session.roaming


def service_available(country: Country, service: Service) -> Decision:
    """R12: services depend on local partners, so each country offers its own set."""
    if country.offers(service.id):
        return Decision(
            "R12", Outcome.ALLOW, Reason.SERVICE_OFFERED,
            f"{service.id} is offered in {country.iso or 'this country'}", service.id,
        )
    return Decision(
        "R12", Outcome.DENY, Reason.SERVICE_UNAVAILABLE_IN_COUNTRY,
        f"{service.id} is not offered in {country.name_en} ({country.iso or '?'})", service.id,
    )


def service_access(
    profile: SimProfile, country: Country, session: VehicleSession, service: Service
) -> Decision:
    """Bearer and roaming rules for one service, first refusal wins:

    1. the bearer must be one the model has (R19: a Taycan has no SIM slot);
    2. the integrated SIM needs identity verification where the law asks for it (R25);
    3. abroad, a SIM bearer needs the head unit's roaming switch unless the model roams by
       itself (R21);
    4. abroad on a bearer that may cost money (inserted SIM, hotspot, integrated SIM outside
       the fee-free countries), bulk transfers wait (R20, R21).
    """
    bearer = session.bearer
    if bearer not in profile.bearers:
        allowed = ", ".join(sorted(b.name.lower() for b in profile.bearers))
        return Decision(
            "R19" if profile.bearers == {Bearer.EMBEDDED_SIM} else "R20",
            Outcome.DENY, Reason.BEARER_NOT_SUPPORTED,
            f"{profile.model} {profile.years_label()} cannot use {bearer.name.lower()} "
            f"(only {allowed})",
            service.id,
        )
    if (
        bearer is Bearer.EMBEDDED_SIM
        and country.identity_verification_required
        and not session.state.identity_verified
    ):
        return Decision(
            "R25", Outcome.DENY, Reason.IDENTITY_VERIFICATION_REQUIRED,
            f"{country.iso} requires identity verification before the integrated SIM is used",
            service.id,
        )
    if not is_abroad(session, country):
        return Decision(
            "R21", Outcome.ALLOW, Reason.HOME_NETWORK, "the car is in its home country",
            service.id,
        )
    if bearer in SIM_BEARERS and not profile.roaming_automatic and not session.roaming_enabled:
        return Decision(
            "R21", Outcome.DENY, Reason.ROAMING_DISABLED,
            f"abroad in {country.iso or '?'} with roaming switched off in the head unit",
            service.id,
        )
    if bearer is Bearer.EMBEDDED_SIM and country.embedded_sim_fee_free:
        return Decision(
            "R21", Outcome.ALLOW, Reason.ROAMING_FEE_FREE,
            f"integrated SIM roams free of charge in {country.iso}", service.id,
        )
    if service.bulk:
        return Decision(
            "R21", Outcome.DEFER, Reason.PAID_BEARER_BULK,
            f"{service.id} is bulk and {bearer.name.lower()} may cost roaming fees in "
            f"{country.iso or '?'}",
            service.id,
        )
    return Decision(
        "R21", Outcome.ALLOW, Reason.ROAMING_ALLOWED,
        f"roaming over {bearer.name.lower()} in {country.iso or '?'}", service.id,
    )
