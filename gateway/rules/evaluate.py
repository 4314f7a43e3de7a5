"""All rules for one car at once: one decision per service it could use where it is now."""

from __future__ import annotations

from gateway.model import VehicleSession
from gateway.reference.schema import Country, Service, SimProfile
from gateway.reference.snapshot import ReferenceData
from gateway.rules.access import service_access, service_available
from gateway.rules.decision import Decision, Outcome, Reason
from gateway.rules.privacy import REMOTE_SERVICES, privacy_filter, remote_command_allowed

__all__ = ["decide_service", "evaluate", "relevant_services", "visited_country"]


def visited_country(ref: ReferenceData, session: VehicleSession) -> Country:
    """Where the car is: the reported country, else the network's MCC, else home when the car
    says it is not roaming; anything unknown is the R30 fallback.
    """
    if session.visited_country:
        return ref.country(session.visited_country)
    if session.visited_mcc:
        by_mcc = ref.country_for_mcc(session.visited_mcc)
        return by_mcc if by_mcc is not None else ref.fallback.for_iso("")
    if not session.roaming and session.home_country:
        return ref.country(session.home_country)
    return ref.fallback.for_iso("")


def relevant_services(ref: ReferenceData, session: VehicleSession) -> list[Service]:
    """The services the car can have: those offered in its home country (R2: the account's
    country), the whole catalogue when the home country is not known yet.
    """
    if not session.home_country:
        return list(ref.services.values())
    home = ref.country(session.home_country)
    return [ref.services[sid] for sid in home.services if sid in ref.services]


def decide_service(
    profile: SimProfile, country: Country, session: VehicleSession, service: Service
) -> Decision:
    """The first refusal among R12 (country), R19-R21/R25 (bearer, roaming) wins; if the
    service may flow, R22 privacy may still redact it (the location of every service);
    otherwise the access decision stands.
    """
    available = service_available(country, service)
    if not available.allowed:
        return available
    access = service_access(profile, country, session, service)
    if not access.allowed:
        return access
    privacy = privacy_filter(session.privacy, service.id)
    return access if privacy.allowed else privacy


def evaluate(ref: ReferenceData, session: VehicleSession) -> list[Decision]:
    """One decision per relevant service in catalogue order of the home country, plus a DENY
    for remote commands when privacy mode refuses them (R22). A car without a SIM profile for
    its model and model year gets a single DENY: the data, not the code, is missing.
    """
    profile = ref.profile_for(session.model, session.model_year)
    if profile is None:
        return [
            Decision(
                "R20", Outcome.DENY, Reason.NO_SIM_PROFILE,
                f"no sim profile for model {session.model!r} MY{session.model_year}",
            )
        ]
    country = visited_country(ref, session)
    decisions: list[Decision] = []
    for service in relevant_services(ref, session):
        decision = decide_service(profile, country, session, service)
        decisions.append(decision)
        if service.id == REMOTE_SERVICES and decision.outcome in (Outcome.ALLOW, Outcome.REDACT):
            command = remote_command_allowed(session)
            if not command.allowed:
                decisions.append(command)
    return decisions
