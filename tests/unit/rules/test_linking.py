"""R5, R7: the linking method, its head-unit menu and the security code, per model and model
year, from the shipped sim_profiles/ (boundaries MY2017-2021 / 2022, Macan 2018 / 2019)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from gateway.model import VehicleSession
from gateway.reference import ReferenceData, load_reference
from gateway.rules import linking_advice, linking_facts

REF: ReferenceData = load_reference(Path(__file__).resolve().parents[3])
VIN = "WP0ZZZ99ZTS392124"
PAIR_OLD = "APPS > OPT > Log in Porsche Connect"
PAIR_NEW = "Porsche Connect settings"
ACCOUNT = "Settings > Accounts > Set up account"

# (model, model year) -> (method, menu (en), alternative method or None, security code R7)
CASES: list[tuple[str, int, str, str, str | None, bool]] = [
    ("Taycan", 2020, "account_id", ACCOUNT, None, True),
    ("718", 2017, "pairing_code", PAIR_OLD, None, False),
    ("718", 2024, "pairing_code", PAIR_OLD, None, False),
    ("Macan", 2017, "pairing_code", PAIR_OLD, None, False),
    ("Macan", 2018, "pairing_code", PAIR_OLD, None, False),  # "bis 2018": old head unit
    ("Macan", 2019, "pairing_code", PAIR_NEW, None, False),
    ("911", 2018, "pairing_code", PAIR_OLD, None, False),
    ("911", 2019, "pairing_code", PAIR_NEW, None, False),
    ("911", 2021, "pairing_code", PAIR_NEW, "account_id", False),  # R5 2021/2022 ambiguity
    ("911", 2022, "account_id", ACCOUNT, None, True),
    ("Cayenne", 2017, "pairing_code", PAIR_OLD, None, False),
    ("Cayenne", 2018, "pairing_code", PAIR_NEW, None, False),
    ("Cayenne", 2021, "pairing_code", PAIR_NEW, "account_id", False),
    ("Cayenne", 2022, "account_id", ACCOUNT, None, True),
    ("Panamera", 2017, "pairing_code", PAIR_NEW, None, False),
    ("Panamera", 2021, "pairing_code", PAIR_NEW, "account_id", False),
    ("Panamera", 2022, "account_id", ACCOUNT, None, True),
]


@pytest.mark.parametrize(("model", "year", "method", "menu", "alternative", "security"), CASES)
def test_linking_facts_follow_r5_and_r7_for_model_and_model_year(
    model: str, year: int, method: str, menu: str, alternative: str | None, security: bool
) -> None:
    facts = linking_facts(REF, VehicleSession(VIN, model=model, model_year=year))
    assert facts is not None
    assert (facts.method, facts.menu.en, facts.alternative_method, facts.security_code_required) == (
        method, menu, alternative, security
    )
    if alternative is not None:
        assert facts.alternative_menu is not None and facts.alternative_menu.en == ACCOUNT


@pytest.mark.parametrize(
    "session",
    [
        VehicleSession(VIN),  # never said hello
        VehicleSession(VIN, model="Macan"),  # model year not told
        VehicleSession(VIN, model="Carrera GT", model_year=2005),  # no profile
        VehicleSession(VIN, model="Taycan", model_year=2019),  # before the first profile year
    ],
)
def test_unknown_model_has_no_linking_facts_rather_than_a_guess(session: VehicleSession) -> None:
    assert linking_facts(REF, session) is None
    assert "not known" in linking_advice(REF, session, "en")
    assert "nicht bekannt" in linking_advice(REF, session, "de")


def test_advice_for_a_pairing_code_car_names_the_code_the_menu_and_no_security_code() -> None:
    macan = VehicleSession(VIN, model="Macan", model_year=2016)
    en = linking_advice(REF, macan, "en")
    assert "8-digit pairing code" in en and PAIR_OLD in en and "My Porsche > My vehicles" in en
    assert "No security code is needed" in en
    de = linking_advice(REF, macan, "de")
    assert "8-stelligen Pairing Code" in de and "APPS > OPT > Anmelden Porsche Connect" in de
    assert "kein Sicherheitscode erforderlich" in de


def test_advice_for_an_account_id_car_names_the_menu_and_the_security_code() -> None:
    cayenne = VehicleSession(VIN, model="Cayenne", model_year=2023)
    en = linking_advice(REF, cayenne, "en")
    assert "Porsche ID" in en and ACCOUNT in en and "security code is required" in en
    de = linking_advice(REF, cayenne, "de")
    assert "Einstellung > Accounts > Account einrichten" in de and "Sicherheitscode erforderlich" in de


def test_advice_for_model_year_2021_offers_both_ways() -> None:
    en = linking_advice(REF, VehicleSession(VIN, model="Panamera", model_year=2021), "en")
    assert PAIR_NEW in en and ACCOUNT in en


def test_the_security_code_fact_follows_the_country_as_the_remote_command_check_does() -> None:
    # R7 is country-dependent: a Taycan whose home country does not use the code needs none.
    de = REF.country("DE").model_copy(update={"security_code_required": False})
    ref = dataclasses.replace(REF, countries={**REF.countries, "DE": de})
    taycan = VehicleSession(vin=VIN, model="Taycan", model_year=2023, home_country="DE")
    facts = linking_facts(ref, taycan)
    assert facts is not None and not facts.security_code_required
    facts = linking_facts(REF, taycan)
    assert facts is not None and facts.security_code_required
