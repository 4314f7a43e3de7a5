"""R7: a remote command needs the security code exactly for the Taycan and the
911/Cayenne/Panamera from MY2022, where the owner's home country uses the code (data)."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.model import VehicleSession
from gateway.reference import ReferenceData, load_reference
from gateway.reference.schema import Country
from gateway.rules import Outcome, Reason, security_code_decision, security_code_required

REF: ReferenceData = load_reference(Path(__file__).resolve().parents[3])
VIN = "WP0ZZZ99ZTS392124"

# (model, model year) -> does the model have the R7 code?
MODELS: list[tuple[str, int, bool]] = [
    ("Taycan", 2020, True),
    ("Taycan", 2025, True),
    ("911", 2018, False),
    ("911", 2021, False),
    ("911", 2022, True),
    ("Cayenne", 2021, False),
    ("Cayenne", 2022, True),
    ("Panamera", 2021, False),
    ("Panamera", 2022, True),
    ("Macan", 2019, False),
    ("718", 2024, False),
]


def _with_flag(country: Country, required: bool) -> Country:
    return country.model_copy(update={"security_code_required": required})


COUNTRIES = [
    _with_flag(REF.country("DE"), True),
    _with_flag(REF.country("US"), False),
    REF.country("ZZ"),  # unlisted: the fallback
]


@pytest.mark.parametrize("country", COUNTRIES, ids=lambda c: c.iso)
@pytest.mark.parametrize(("model", "year", "has_code"), MODELS)
def test_the_code_is_required_exactly_for_r7_models_in_countries_that_use_it(
    model: str, year: int, has_code: bool, country: Country
) -> None:
    profile = REF.profile_for(model, year)
    assert profile is not None
    decision = security_code_required(profile, country)
    assert decision.rule == "R7"
    required = has_code and country.security_code_required
    assert decision.outcome is (Outcome.DENY if required else Outcome.ALLOW)
    if not country.security_code_required:
        assert decision.reason is Reason.SECURITY_CODE_NOT_IN_COUNTRY
    elif not has_code:
        assert decision.reason is Reason.SECURITY_CODE_NOT_FOR_MODEL
    else:
        assert decision.reason is Reason.SECURITY_CODE_REQUIRED


def test_every_shipped_country_and_the_fallback_require_the_code() -> None:
    # roaming/README.md: the source names no country, so the gateway fails closed.
    assert all(c.security_code_required for c in REF.countries.values())
    assert REF.fallback.security_code_required


def test_a_car_without_a_profile_needs_the_code_where_the_country_uses_it() -> None:
    assert security_code_required(None, _with_flag(REF.country("DE"), True)).outcome is Outcome.DENY
    assert security_code_required(None, _with_flag(REF.country("DE"), False)).allowed


def test_the_home_country_decides_not_the_visited_one() -> None:
    taycan = VehicleSession(vin=VIN, model="Taycan", model_year=2023, home_country="DE",
                            visited_country="US", roaming=True)
    decision = security_code_decision(REF, taycan)
    assert decision.outcome is Outcome.DENY and "DE" in decision.detail


def test_a_car_that_has_not_said_its_model_needs_the_code() -> None:
    assert security_code_decision(REF, VehicleSession(vin=VIN)).outcome is Outcome.DENY
    old_911 = VehicleSession(vin=VIN, model="911", model_year=2019, home_country="DE")
    assert security_code_decision(REF, old_911).allowed
