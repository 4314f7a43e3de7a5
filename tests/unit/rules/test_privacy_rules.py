"""R22: privacy mode withholds personal data and refuses remote commands."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.model import Privacy, PrivacyMode, VehicleSession
from gateway.rules import Outcome, Reason, privacy_filter, remote_command_allowed

SessionFactory = Callable[..., VehicleSession]


@pytest.mark.parametrize(
    ("mode", "listed", "service", "personal", "outcome", "reason"),
    [
        (PrivacyMode.OFF, (), "car-finder", True, Outcome.ALLOW, Reason.PRIVACY_OFF),
        (PrivacyMode.ALL_SERVICES, (), "car-finder", True, Outcome.REDACT,
         Reason.PRIVACY_ALL_SERVICES),
        (PrivacyMode.ALL_SERVICES, (), "radio-plus", False, Outcome.ALLOW, Reason.NOT_PERSONAL),
        (PrivacyMode.PER_SERVICE, ("car-finder",), "car-finder", True, Outcome.REDACT,
         Reason.PRIVACY_SERVICE_WITHHELD),
        (PrivacyMode.PER_SERVICE, ("car-finder",), "charging", True, Outcome.ALLOW,
         Reason.SERVICE_NOT_WITHHELD),
        (PrivacyMode.PER_SERVICE, ("software-update",), "software-update", False, Outcome.ALLOW,
         Reason.NOT_PERSONAL),
        (PrivacyMode.UNSPECIFIED, (), "car-finder", True, Outcome.REDACT,
         Reason.PRIVACY_MODE_UNKNOWN),
        (PrivacyMode.UNSPECIFIED, (), "radio-plus", False, Outcome.ALLOW, Reason.NOT_PERSONAL),
    ],
)
def test_privacy_filter_table(
    make_session: SessionFactory,
    mode: PrivacyMode,
    listed: tuple[str, ...],
    service: str,
    personal: bool,
    outcome: Outcome,
    reason: Reason,
) -> None:
    session = make_session(privacy=Privacy(mode=mode, services=frozenset(listed)))
    decision = privacy_filter(session, service, personal)
    assert (decision.rule, decision.outcome, decision.reason) == ("R22", outcome, reason)
    assert decision.service == service


def test_privacy_for_all_services_redacts_the_location_of_every_service(
    make_session: SessionFactory,
) -> None:
    session = make_session(privacy=Privacy(mode=PrivacyMode.ALL_SERVICES))
    for service in ("remote-services", "car-finder", "navigation-plus", "charging"):
        assert privacy_filter(session, service, personal=True).outcome is Outcome.REDACT


def test_car_that_never_reported_privacy_is_treated_as_private(
    make_session: SessionFactory,
) -> None:
    # Fail closed: an unknown setting must not leak a location.
    session = make_session(privacy=Privacy(mode=PrivacyMode.UNSPECIFIED))
    assert privacy_filter(session, "car-finder", personal=True).outcome is Outcome.REDACT


@pytest.mark.parametrize(
    ("mode", "listed", "allowed"),
    [
        (PrivacyMode.OFF, (), True),
        (PrivacyMode.ALL_SERVICES, (), False),
        (PrivacyMode.PER_SERVICE, ("remote-services",), False),
        (PrivacyMode.PER_SERVICE, ("car-finder",), True),
        (PrivacyMode.UNSPECIFIED, (), False),
    ],
)
def test_remote_commands_are_refused_in_privacy_mode(
    make_session: SessionFactory, mode: PrivacyMode, listed: tuple[str, ...], allowed: bool
) -> None:
    session = make_session(privacy=Privacy(mode=mode, services=frozenset(listed)))
    decision = remote_command_allowed(session)
    assert decision.allowed is allowed
    if not allowed:
        assert (decision.outcome, decision.reason) == (Outcome.DENY,
                                                       Reason.PRIVACY_REMOTE_COMMANDS)


SERVICE_IDS = st.sampled_from(
    ["remote-services", "car-finder", "navigation-plus", "charging", "radio-plus", "x-unknown"]
)


@given(
    mode=st.sampled_from(list(PrivacyMode)),
    listed=st.frozensets(SERVICE_IDS, max_size=6),
    service=SERVICE_IDS,
    personal=st.booleans(),
)
def test_personal_data_never_passes_when_the_setting_withholds_it(
    mode: PrivacyMode, listed: frozenset[str], service: str, personal: bool
) -> None:
    privacy = Privacy(mode=mode, services=listed)
    session = VehicleSession(vin="WP0ZZZ99ZLS100001", privacy=privacy)

    decision = privacy_filter(session, service, personal)

    withheld = privacy.withholds(service) or mode is PrivacyMode.UNSPECIFIED
    if personal and withheld:
        assert decision.outcome is Outcome.REDACT
    else:
        assert decision.outcome is Outcome.ALLOW
    assert decision.outcome in (Outcome.ALLOW, Outcome.REDACT)  # privacy never drops data
