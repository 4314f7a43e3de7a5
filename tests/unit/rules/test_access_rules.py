"""R12, R19-R21, R25: bearer, roaming, fees, identity and country availability."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from gateway.model import Bearer, VehicleSession, VehicleState
from gateway.reference import ReferenceData
from gateway.rules import Outcome, Reason, is_abroad, service_access, service_available

SessionFactory = Callable[..., VehicleSession]

ABROAD_IN_FRANCE = {"visited_country": "FR", "visited_mcc": 208, "roaming": True}


def _access(
    ref: ReferenceData, session: VehicleSession, service_id: str
) -> tuple[str, Outcome, Reason]:
    profile = ref.profile_for(session.model, session.model_year)
    service = ref.service(service_id)
    assert profile is not None and service is not None
    decision = service_access(profile, ref.country(session.visited_country), session, service)
    assert decision.service == service_id
    return decision.rule, decision.outcome, decision.reason


@pytest.mark.parametrize(
    ("overrides", "service", "expected"),
    [
        # at home every bearer flows
        ({"bearer": Bearer.INSERTED_SIM}, "software-update",
         ("R21", Outcome.ALLOW, Reason.HOME_NETWORK)),
        # R21: abroad on a SIM with the head unit's roaming switch off
        ({**ABROAD_IN_FRANCE, "bearer": Bearer.INSERTED_SIM}, "car-finder",
         ("R21", Outcome.DENY, Reason.ROAMING_DISABLED)),
        ({**ABROAD_IN_FRANCE, "bearer": Bearer.EMBEDDED_SIM}, "car-finder",
         ("R21", Outcome.DENY, Reason.ROAMING_DISABLED)),
        # a hotspot roams on the phone's own setting
        ({**ABROAD_IN_FRANCE, "bearer": Bearer.WIFI_HOTSPOT}, "car-finder",
         ("R21", Outcome.ALLOW, Reason.ROAMING_ALLOWED)),
        # R20/R21: bulk waits on bearers that may cost roaming fees
        ({**ABROAD_IN_FRANCE, "bearer": Bearer.INSERTED_SIM, "roaming_enabled": True},
         "software-update", ("R21", Outcome.DEFER, Reason.PAID_BEARER_BULK)),
        ({**ABROAD_IN_FRANCE, "bearer": Bearer.WIFI_HOTSPOT}, "fod-activation",
         ("R21", Outcome.DEFER, Reason.PAID_BEARER_BULK)),
        ({**ABROAD_IN_FRANCE, "bearer": Bearer.INSERTED_SIM, "roaming_enabled": True},
         "navigation-plus", ("R21", Outcome.ALLOW, Reason.ROAMING_ALLOWED)),
        # R21: the integrated SIM roams free of charge in the fee-free countries, bulk included
        ({**ABROAD_IN_FRANCE, "roaming_enabled": True}, "software-update",
         ("R21", Outcome.ALLOW, Reason.ROAMING_FEE_FREE)),
        # ... but not in the USA
        ({"visited_country": "US", "roaming": True, "roaming_enabled": True}, "software-update",
         ("R21", Outcome.DEFER, Reason.PAID_BEARER_BULK)),
        ({"visited_country": "US", "roaming": True, "roaming_enabled": True}, "car-finder",
         ("R21", Outcome.ALLOW, Reason.ROAMING_ALLOWED)),
        # R25: identity verification for the integrated SIM where required (DE, IT, ...)
        ({"state": VehicleState(identity_verified=False)}, "car-finder",
         ("R25", Outcome.DENY, Reason.IDENTITY_VERIFICATION_REQUIRED)),
        ({"visited_country": "IT", "roaming": True, "roaming_enabled": True,
          "state": VehicleState(identity_verified=False)}, "car-finder",
         ("R25", Outcome.DENY, Reason.IDENTITY_VERIFICATION_REQUIRED)),
        ({"state": VehicleState(identity_verified=False), "bearer": Bearer.INSERTED_SIM},
         "car-finder", ("R21", Outcome.ALLOW, Reason.HOME_NETWORK)),
        ({**ABROAD_IN_FRANCE, "roaming_enabled": True,
          "state": VehicleState(identity_verified=False)}, "car-finder",
         ("R21", Outcome.ALLOW, Reason.ROAMING_FEE_FREE)),
        # R20: a car that did not say how it is connected
        ({"bearer": Bearer.UNSPECIFIED}, "car-finder",
         ("R20", Outcome.DENY, Reason.BEARER_NOT_SUPPORTED)),
    ],
)
def test_service_access_table_for_a_911(
    ref: ReferenceData,
    make_session: SessionFactory,
    overrides: dict[str, object],
    service: str,
    expected: tuple[str, Outcome, Reason],
) -> None:
    assert _access(ref, make_session(**overrides), service) == expected


def test_taycan_abroad_needs_no_roaming_switch(
    ref: ReferenceData, make_session: SessionFactory
) -> None:
    session = make_session(model="Taycan", model_year=2023, **ABROAD_IN_FRANCE)
    assert not session.roaming_enabled
    assert _access(ref, session, "car-finder") == ("R21", Outcome.ALLOW, Reason.ROAMING_FEE_FREE)


def test_taycan_on_an_inserted_sim_is_refused_because_it_has_no_sim_slot(
    ref: ReferenceData, make_session: SessionFactory
) -> None:
    session = make_session(model="Taycan", model_year=2023, bearer=Bearer.INSERTED_SIM)
    assert _access(ref, session, "car-finder") == (
        "R19", Outcome.DENY, Reason.BEARER_NOT_SUPPORTED,
    )


@pytest.mark.parametrize(("iso", "service", "offered"), [
    ("DE", "charging", True),
    ("RU", "charging", False),
    ("US", "radio-plus", False),
    ("AL", "navigation-plus", False),
    ("MX", "car-finder", True),  # R30 fallback keeps a reduced set
    ("MX", "navigation-plus", False),
])
def test_service_availability_depends_on_the_country(
    ref: ReferenceData, iso: str, service: str, offered: bool
) -> None:
    svc = ref.service(service)
    assert svc is not None
    decision = service_available(ref.country(iso), svc)
    assert decision.rule == "R12"
    if offered:
        assert (decision.outcome, decision.reason) == (Outcome.ALLOW, Reason.SERVICE_OFFERED)
    else:
        assert (decision.outcome, decision.reason) == (
            Outcome.DENY, Reason.SERVICE_UNAVAILABLE_IN_COUNTRY,
        )
        assert service in decision.detail
        assert iso in decision.detail


def test_unavailable_service_detail_names_country_and_service(ref: ReferenceData) -> None:
    charging = ref.service("charging")
    assert charging is not None
    decision = service_available(ref.country("RU"), charging)
    assert decision.detail == "charging is not offered in Russia (RU)"


@pytest.mark.parametrize(("home", "visited", "roaming_flag", "abroad"), [
    ("DE", "DE", True, False),  # ISO codes win over the car's flag
    ("DE", "AT", False, True),
    ("", "AT", True, True),  # home unknown: trust the flag
    ("", "AT", False, False),
])
def test_is_abroad_compares_iso_codes_and_falls_back_to_the_roaming_flag(
    ref: ReferenceData, make_session: SessionFactory, home: str, visited: str,
    roaming_flag: bool, abroad: bool,
) -> None:
    session = make_session(home_country=home, visited_country=visited, roaming=roaming_flag)
    assert is_abroad(session, ref.country(visited)) is abroad
