"""sim_profiles/: every file loads, and each carries the source's facts and menu paths."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from gateway.model import Bearer
from gateway.reference import ReferenceData, SimProfile

PROFILE_FILES = sorted(
    p.name for p in (Path(__file__).resolve().parents[3] / "sim_profiles").glob("*.toml")
)

# --- menu paths from the source (German verbatim) with their English translation ----------
# R21 roaming
ROAM_OLD = ("PHONE > OPT > SET PHONE > Roaming", "PHONE > OPT > SET PHONE > Roaming")
ROAM_PANAMERA = (
    "Gerätemanager (je nach Modelljahr unter SET oder DEVICES) > Optionen > Datenverbindungen"
    " > Roaming",
    "Device manager (under SET or DEVICES, depending on model year) > Options > Data"
    " connections > Roaming",
)
ROAM_NEW = (
    "SET > Gerätemanager > Optionen > Mobile Daten > Roaming",
    "SET > Device manager > Options > Mobile data > Roaming",
)
# R22 data off
OFF_OLD = (
    "PHONE > OPT > SET PHONE > Datenverbindung > Datenverbindungen > AUS",
    "PHONE > OPT > SET PHONE > Data connection > Data connections > OFF",
)
OFF_PANAMERA = (
    "Gerätemanager (je nach Modelljahr unter SET oder DEVICES) > Optionen > Datenverbindungen"
    " > Datenverbindungen > AUS",
    "Device manager (under SET or DEVICES, depending on model year) > Options > Data"
    " connections > Data connections > OFF",
)
OFF_NEW = (
    "SET > Gerätemanager > Optionen > Mobile Daten > Mobile Daten > AUS",
    "SET > Device manager > Options > Mobile data > Mobile data > OFF",
)
# R22 Taycan: data off is privacy mode for all services
PRIVACY_TAYCAN = (
    "Einstellung > Privatsphäre und Porsche Connect Einstellungen > Privatmodus > Privatmodus"
    " für alle Dienste aktivieren",
    "Settings > Privacy and Porsche Connect settings > Privacy mode > Enable privacy mode for"
    " all services",
)
# R23 SIM PIN
PIN_OLD = (
    "PHONE > OPT > SET PHONE > Telefon > SIM-Karte > PIN merken",
    "PHONE > OPT > SET PHONE > Phone > SIM card > Remember PIN",
)
PIN_NEW = (
    "Gerätemanager (je nach Modelljahr unter SET oder DEVICES) > Optionen > Telefon > SIM-Karte"
    " > PIN merken",
    "Device manager (under SET or DEVICES, depending on model year) > Options > Phone > SIM card"
    " > Remember PIN",
)
# R5 linking
PAIR_OLD = ("APPS > OPT > Anmelden Porsche Connect", "APPS > OPT > Log in Porsche Connect")
PAIR_NEW = ("Porsche Connect Einstellungen", "Porsche Connect settings")
ACCOUNT = ("Einstellung > Accounts > Account einrichten", "Settings > Accounts > Set up account")

OLD = {"roaming": ROAM_OLD, "data_off": OFF_OLD, "sim_pin": PIN_OLD, "pairing_code": PAIR_OLD}
NEW = {"roaming": ROAM_NEW, "data_off": OFF_NEW, "sim_pin": PIN_NEW}
NONE_OF = ("roaming", "data_off", "privacy_mode", "sim_pin", "pairing_code", "account_setup")

# file -> (model, from, to, linking method, security code R7, menus)
EXPECTED: dict[str, tuple[str, int, int | None, str, bool, dict[str, tuple[str, str]]]] = {
    "taycan.toml": (
        "Taycan", 2020, None, "account_id", True,
        {"data_off": PRIVACY_TAYCAN, "privacy_mode": PRIVACY_TAYCAN, "account_setup": ACCOUNT},
    ),
    "911-7th-gen.toml": ("911", 2012, 2018, "pairing_code", False, OLD),
    "911-8th-gen-2019.toml": (
        "911", 2019, 2021, "pairing_code", False,
        {**NEW, "pairing_code": PAIR_NEW, "account_setup": ACCOUNT},
    ),
    "911-8th-gen-2022.toml": (
        "911", 2022, None, "account_id", True, {**NEW, "account_setup": ACCOUNT},
    ),
    "718.toml": ("718", 2017, None, "pairing_code", False, OLD),
    "macan-to-2018.toml": ("Macan", 2015, 2018, "pairing_code", False, OLD),
    "macan-from-2019.toml": (
        "Macan", 2019, None, "pairing_code", False, {**NEW, "pairing_code": PAIR_NEW},
    ),
    "cayenne-2nd-gen.toml": ("Cayenne", 2011, 2017, "pairing_code", False, OLD),
    "cayenne-3rd-gen-2018.toml": (
        "Cayenne", 2018, 2021, "pairing_code", False,
        {**NEW, "pairing_code": PAIR_NEW, "account_setup": ACCOUNT},
    ),
    "cayenne-3rd-gen-2022.toml": (
        "Cayenne", 2022, None, "account_id", True, {**NEW, "account_setup": ACCOUNT},
    ),
    "panamera-2nd-gen-2017.toml": (
        "Panamera", 2017, 2019, "pairing_code", False,
        {"roaming": ROAM_PANAMERA, "data_off": OFF_PANAMERA, "sim_pin": PIN_NEW,
         "pairing_code": PAIR_NEW},
    ),
    "panamera-2nd-gen-2020.toml": (
        "Panamera", 2020, 2021, "pairing_code", False,
        {**NEW, "pairing_code": PAIR_NEW, "account_setup": ACCOUNT},
    ),
    "panamera-2nd-gen-2022.toml": (
        "Panamera", 2022, None, "account_id", True, {**NEW, "account_setup": ACCOUNT},
    ),
}


def _load(name: str) -> SimProfile:
    path = Path(__file__).resolve().parents[3] / "sim_profiles" / name
    return SimProfile.model_validate(tomllib.loads(path.read_text(encoding="utf-8")))


def test_every_profile_file_is_in_the_expectation_table() -> None:
    assert sorted(EXPECTED) == PROFILE_FILES


@pytest.mark.parametrize("name", PROFILE_FILES)
def test_profile_file_loads_with_the_sources_model_years_and_linking(name: str) -> None:
    model, year_from, year_to, method, security_code, _ = EXPECTED[name]
    profile = _load(name)
    assert (profile.model, profile.model_year_from, profile.model_year_to) == (
        model, year_from, year_to,
    )
    assert profile.linking.method == method  # R5
    assert profile.security_code_required is security_code  # R7


@pytest.mark.parametrize("name", PROFILE_FILES)
def test_profile_menus_are_the_sources_paths_in_german_and_english(name: str) -> None:
    menus = EXPECTED[name][5]
    profile = _load(name)
    for field in NONE_OF:
        menu = getattr(profile.menus, field)
        if field in menus:
            assert menu is not None, field
            assert (menu.de, menu.en) == menus[field], field
        else:
            assert menu is None, field


def test_taycan_uses_only_the_integrated_sim_roams_by_itself_and_needs_no_sim_pin() -> None:
    taycan = _load("taycan.toml")
    assert taycan.bearers == {Bearer.EMBEDDED_SIM}  # R19
    assert taycan.roaming_automatic is True  # R21
    assert taycan.sim_pin_applies is False  # R23
    assert taycan.privacy_per_service is True  # R22


@pytest.mark.parametrize("name", [n for n in PROFILE_FILES if n != "taycan.toml"])
def test_other_models_have_three_bearers_a_roaming_switch_and_a_sim_pin(name: str) -> None:
    profile = _load(name)
    assert profile.bearers == {Bearer.EMBEDDED_SIM, Bearer.INSERTED_SIM, Bearer.WIFI_HOTSPOT}
    assert profile.roaming_automatic is False  # R21
    assert profile.sim_pin_applies is True  # R23


def test_roaming_menu_note_says_ticked_means_enabled() -> None:
    menu = _load("718.toml").menus.roaming
    assert menu is not None
    assert menu.note_de == "Haken gesetzt: Roaming aktiviert"
    assert menu.note_en == "ticked: roaming enabled"


def test_pairing_code_menu_tells_where_the_8_digit_code_is_shown() -> None:
    menu = _load("macan-from-2019.toml").menus.pairing_code
    assert menu is not None
    assert menu.note_de is not None and "My Porsche > Meine Fahrzeuge" in menu.note_de
    assert menu.note_en is not None and "8-digit" in menu.note_en


@pytest.mark.parametrize(
    "name", ["911-8th-gen-2019.toml", "cayenne-3rd-gen-2018.toml", "panamera-2nd-gen-2020.toml"]
)
def test_model_year_2021_keeps_the_sources_pairing_code_ambiguity_as_data(name: str) -> None:
    linking = _load(name).linking
    assert linking.methods_for(2021) == ("pairing_code", "account_id")  # R5: 2021 vs 2022
    assert linking.methods_for(2020) == ("pairing_code",)


@pytest.mark.parametrize(
    ("model", "year", "expected"),
    [
        ("911", 2018, "911-7th-gen.toml"),
        ("911", 2019, "911-8th-gen-2019.toml"),
        ("911", 2021, "911-8th-gen-2019.toml"),
        ("911", 2022, "911-8th-gen-2022.toml"),
        ("911", 2030, "911-8th-gen-2022.toml"),
        ("Macan", 2018, "macan-to-2018.toml"),
        ("macan", 2019, "macan-from-2019.toml"),
        ("Cayenne", 2017, "cayenne-2nd-gen.toml"),
        ("Cayenne", 2018, "cayenne-3rd-gen-2018.toml"),
        ("CAYENNE", 2022, "cayenne-3rd-gen-2022.toml"),
        ("Panamera", 2019, "panamera-2nd-gen-2017.toml"),
        ("Panamera", 2020, "panamera-2nd-gen-2020.toml"),
        ("Panamera", 2022, "panamera-2nd-gen-2022.toml"),
        ("Taycan", 2025, "taycan.toml"),
        ("718", 2017, "718.toml"),
    ],
)
def test_profile_for_picks_the_file_covering_model_and_year(
    ref: ReferenceData, model: str, year: int, expected: str
) -> None:
    assert ref.profile_for(model, year) == _load(expected)


@pytest.mark.parametrize(("model", "year"), [("Taycan", 2019), ("Panamera", 2016), ("959", 2020)])
def test_profile_for_returns_none_without_a_covering_profile(
    ref: ReferenceData, model: str, year: int
) -> None:
    assert ref.profile_for(model, year) is None


def test_fod_retry_steps_follow_the_source_in_both_languages() -> None:
    steps = _load("taycan.toml").fod_retry_steps  # R18
    assert steps.de == (
        "Stellen Sie sicher, dass keine aktive Ladeverbindung besteht.",
        "Schalten Sie das Fahrzeug mit der Power-Taste aus, verlassen Sie es und schließen Sie"
        " es ab.",
        "Warten Sie ca. 10 Minuten.",
        "Starten Sie das Fahrzeug anschließend erneut.",
        "In der Regel wurde die Freischaltung nach diesem Ablauf durchgeführt bzw. wird das"
        " Online-Softwareupdate erneut als verfügbar im PCM unter Updates angezeigt.",
        "Erscheinen weitere Fehlermeldungen folgen Sie den Anweisungen im PCM bzw."
        " Kombiinstrument und kontaktieren Sie Ihren Porsche Partner.",
    )
    assert steps.en[:4] == (
        "Make sure there is no active charging connection.",
        "Switch the vehicle off with the power button, leave it and lock it.",
        "Wait about 10 minutes.",
        "Then start the vehicle again.",
    )
    assert len(steps.en) == len(steps.de)


@pytest.mark.parametrize("name", PROFILE_FILES)
def test_every_profile_carries_the_same_fod_retry_steps(name: str) -> None:
    assert _load(name).fod_retry_steps == _load("taycan.toml").fod_retry_steps
