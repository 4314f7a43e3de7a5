"""evaluate: one decision per service the car can have, where it is now."""

from __future__ import annotations

from collections.abc import Callable

from gateway.model import Bearer, Privacy, PrivacyMode, VehicleSession
from gateway.reference import ReferenceData
from gateway.rules import Decision, Outcome, Reason, evaluate, visited_country

SessionFactory = Callable[..., VehicleSession]


def _by_service(decisions: list[Decision]) -> dict[str | None, Reason]:
    return {d.service: d.reason for d in decisions}


def test_car_at_home_with_privacy_off_gets_every_home_service(
    ref: ReferenceData, make_session: SessionFactory
) -> None:
    decisions = evaluate(ref, make_session())
    assert [d.service for d in decisions] == list(ref.country("DE").services)
    assert all(d.outcome is Outcome.ALLOW for d in decisions)


def test_services_missing_in_the_visited_country_are_denied_there(
    ref: ReferenceData, make_session: SessionFactory
) -> None:
    session = make_session(visited_country="RU", roaming=True, roaming_enabled=True)
    reasons = _by_service(evaluate(ref, session))
    assert reasons["charging"] is Reason.SERVICE_UNAVAILABLE_IN_COUNTRY  # R12
    assert reasons["remote-services"] is Reason.ROAMING_ALLOWED


def test_privacy_redacts_every_service_and_refuses_remote_commands(
    ref: ReferenceData, make_session: SessionFactory
) -> None:
    session = make_session(privacy=Privacy(mode=PrivacyMode.ALL_SERVICES))
    decisions = evaluate(ref, session)
    outcomes = {(d.service, d.reason) for d in decisions}
    assert ("car-finder", Reason.PRIVACY_ALL_SERVICES) in outcomes
    assert ("remote-services", Reason.PRIVACY_REMOTE_COMMANDS) in outcomes
    # R22: its location is personal too, whatever the service carries.
    assert ("radio-plus", Reason.PRIVACY_ALL_SERVICES) in outcomes


def test_refusal_wins_over_privacy(ref: ReferenceData, make_session: SessionFactory) -> None:
    session = make_session(
        visited_country="FR", roaming=True, bearer=Bearer.INSERTED_SIM,
        privacy=Privacy(mode=PrivacyMode.ALL_SERVICES),
    )
    decisions = evaluate(ref, session)
    assert {d.reason for d in decisions} == {Reason.ROAMING_DISABLED}


def test_car_without_a_profile_gets_one_deny(
    ref: ReferenceData, make_session: SessionFactory
) -> None:
    [decision] = evaluate(ref, make_session(model="Taycan", model_year=2019))
    assert (decision.outcome, decision.reason, decision.service) == (
        Outcome.DENY, Reason.NO_SIM_PROFILE, None,
    )


def test_unknown_home_country_evaluates_the_whole_catalogue(
    ref: ReferenceData, make_session: SessionFactory
) -> None:
    decisions = evaluate(ref, make_session(home_country=""))
    assert [d.service for d in decisions] == list(ref.services)


def test_visited_country_comes_from_the_mcc_when_the_car_sends_no_country(
    ref: ReferenceData, make_session: SessionFactory
) -> None:
    assert visited_country(ref, make_session(visited_country="", visited_mcc=228)).iso == "CH"
    unknown = visited_country(ref, make_session(visited_country="", visited_mcc=334))
    assert unknown.is_fallback
    home = visited_country(ref, make_session(visited_country="", visited_mcc=0, roaming=False))
    assert home.iso == "DE"
