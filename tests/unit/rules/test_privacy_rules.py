"""R22: privacy mode withholds the location of every service it covers, every signal not
declared public, the visited country, and refuses remote commands."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.model import Privacy, PrivacyMode, VehicleSession
from gateway.rules import (
    Outcome,
    Reason,
    privacy_filter,
    remote_command_allowed,
    strictest_privacy,
    telemetry_redaction,
    withholds_visited_country,
)

SessionFactory = Callable[..., VehicleSession]


@pytest.mark.parametrize(
    ("mode", "listed", "service", "outcome", "reason"),
    [
        (PrivacyMode.OFF, (), "car-finder", Outcome.ALLOW, Reason.PRIVACY_OFF),
        (PrivacyMode.ALL_SERVICES, (), "car-finder", Outcome.REDACT, Reason.PRIVACY_ALL_SERVICES),
        (PrivacyMode.ALL_SERVICES, (), "radio-plus", Outcome.REDACT, Reason.PRIVACY_ALL_SERVICES),
        (PrivacyMode.PER_SERVICE, ("car-finder",), "car-finder", Outcome.REDACT,
         Reason.PRIVACY_SERVICE_WITHHELD),
        (PrivacyMode.PER_SERVICE, ("car-finder",), "charging", Outcome.ALLOW,
         Reason.SERVICE_NOT_WITHHELD),
        (PrivacyMode.PER_SERVICE, ("software-update",), "software-update", Outcome.REDACT,
         Reason.PRIVACY_SERVICE_WITHHELD),
        (PrivacyMode.UNSPECIFIED, (), "car-finder", Outcome.REDACT, Reason.PRIVACY_MODE_UNKNOWN),
        (PrivacyMode.UNSPECIFIED, (), "radio-plus", Outcome.REDACT, Reason.PRIVACY_MODE_UNKNOWN),
    ],
)
def test_privacy_filter_table(
    mode: PrivacyMode,
    listed: tuple[str, ...],
    service: str,
    outcome: Outcome,
    reason: Reason,
) -> None:
    decision = privacy_filter(Privacy(mode=mode, services=frozenset(listed)), service)
    assert (decision.rule, decision.outcome, decision.reason) == ("R22", outcome, reason)
    assert decision.service == service


EVERY_SERVICE = ("remote-services", "car-finder", "navigation-plus", "charging", "radio-plus",
                 "voice-pilot", "software-update", "fod-activation", "x-unknown-service")


@pytest.mark.parametrize("service", EVERY_SERVICE)
def test_location_is_withheld_for_every_service_in_all_services_privacy(service: str) -> None:
    # R22: a position is personal data whichever service carries it (radio-plus leaked).
    redaction = telemetry_redaction(Privacy(mode=PrivacyMode.ALL_SERVICES), service)
    assert redaction.withholds  # the location with it


@pytest.mark.parametrize("service", EVERY_SERVICE)
def test_location_is_withheld_for_every_service_when_privacy_is_unstated(service: str) -> None:
    redaction = telemetry_redaction(Privacy(mode=PrivacyMode.UNSPECIFIED), service)
    assert redaction.withholds


@pytest.mark.parametrize("service", EVERY_SERVICE)
def test_location_is_withheld_for_a_listed_service_in_per_service_privacy(service: str) -> None:
    privacy = Privacy(mode=PrivacyMode.PER_SERVICE, services=frozenset({service}))
    assert telemetry_redaction(privacy, service).withholds
    assert not telemetry_redaction(privacy, "some-other-service").withholds


def test_only_public_signals_pass_while_privacy_covers_the_service() -> None:
    redaction = telemetry_redaction(Privacy(mode=PrivacyMode.ALL_SERVICES), "radio-plus",
                                    ("volume_pct",))
    assert redaction.keeps_signal("volume_pct")
    for name in ("gps.lat", "geohash", "address", "station", ""):
        assert not redaction.keeps_signal(name)


def test_every_signal_passes_while_privacy_is_off() -> None:
    redaction = telemetry_redaction(Privacy(mode=PrivacyMode.OFF), "radio-plus", ())
    assert not redaction.withholds and redaction.keeps_signal("gps.lat")


@pytest.mark.parametrize(
    ("mode", "hidden"),
    [
        (PrivacyMode.OFF, False),
        (PrivacyMode.PER_SERVICE, False),
        (PrivacyMode.ALL_SERVICES, True),
        (PrivacyMode.UNSPECIFIED, True),
    ],
)
def test_visited_country_is_withheld_in_all_services_or_unstated_privacy(
    mode: PrivacyMode, hidden: bool
) -> None:
    assert withholds_visited_country(Privacy(mode=mode)) is hidden


def _p(mode: PrivacyMode, *services: str) -> Privacy:
    return Privacy(mode=mode, services=frozenset(services))


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        (_p(PrivacyMode.OFF), _p(PrivacyMode.OFF), _p(PrivacyMode.OFF)),
        (_p(PrivacyMode.OFF), _p(PrivacyMode.ALL_SERVICES), _p(PrivacyMode.ALL_SERVICES)),
        (_p(PrivacyMode.ALL_SERVICES), _p(PrivacyMode.OFF), _p(PrivacyMode.ALL_SERVICES)),
        (_p(PrivacyMode.OFF), _p(PrivacyMode.UNSPECIFIED), _p(PrivacyMode.UNSPECIFIED)),
        (_p(PrivacyMode.PER_SERVICE, "car-finder"), _p(PrivacyMode.OFF),
         _p(PrivacyMode.PER_SERVICE, "car-finder")),
        (_p(PrivacyMode.PER_SERVICE, "car-finder"), _p(PrivacyMode.PER_SERVICE, "charging"),
         _p(PrivacyMode.PER_SERVICE, "car-finder", "charging")),
        (_p(PrivacyMode.PER_SERVICE, "car-finder"), _p(PrivacyMode.ALL_SERVICES),
         _p(PrivacyMode.ALL_SERVICES)),
    ],
)
def test_strictest_privacy_withholds_what_either_setting_withholds(
    a: Privacy, b: Privacy, expected: Privacy
) -> None:
    assert strictest_privacy(a, b) == expected


MODES_AND_SERVICES = st.builds(
    _p, st.sampled_from(list(PrivacyMode)),
    *[st.sampled_from(EVERY_SERVICE) for _ in range(2)],
)


@given(a=MODES_AND_SERVICES, b=MODES_AND_SERVICES, service=st.sampled_from(EVERY_SERVICE))
def test_strictest_privacy_never_releases_a_location_either_setting_withholds(
    a: Privacy, b: Privacy, service: str
) -> None:
    judged = strictest_privacy(a, b)
    if not privacy_filter(a, service).allowed or not privacy_filter(b, service).allowed:
        assert not privacy_filter(judged, service).allowed


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
)
def test_location_never_passes_when_the_setting_withholds_it(
    mode: PrivacyMode, listed: frozenset[str], service: str
) -> None:
    privacy = Privacy(mode=mode, services=listed)

    decision = privacy_filter(privacy, service)

    if privacy.withholds(service):  # fails closed on UNSPECIFIED
        assert decision.outcome is Outcome.REDACT
    else:
        assert decision.outcome is Outcome.ALLOW
    assert decision.outcome in (Outcome.ALLOW, Outcome.REDACT)  # privacy never drops data
