"""A bad data file is refused with its file, field path or line, and the reason."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from gateway.reference import ReferenceDataError, load_reference


def _edit(root: Path, rel: str, old: str, new: str) -> None:
    path = root / rel
    text = path.read_text(encoding="utf-8")
    assert old in text, f"{old!r} not in {rel}"
    path.write_text(text.replace(old, new, 1), encoding="utf-8")


def _error(root: Path) -> str:
    with pytest.raises(ReferenceDataError) as info:
        load_reference(root)
    return str(info.value)


def test_shipped_data_loads(repo_root: Path) -> None:
    ref = load_reference(repo_root)
    assert len(ref.profiles) == 13
    assert len(ref.countries) == 45
    assert len(ref.services) == 8


@pytest.mark.parametrize(
    ("rel", "old", "new", "expected"),
    [
        (
            "roaming/countries/de.toml",
            'support_contact = "smartmobility@de.porsche.com"',
            'support_contact = "smartmobility at de.porsche.com"',
            "roaming/countries/de.toml: support_contact: value is not a valid email",
        ),
        (
            "roaming/countries/fr.toml",
            "embedded_sim_fee_free = true",
            'embedded_sim_fee_free = "yes"',
            "roaming/countries/fr.toml: embedded_sim_fee_free: input should be a valid boolean",
        ),
        (
            "sim_profiles/718.toml",
            "model_year_from = 2017",
            'model_year_from = "2017"',
            "sim_profiles/718.toml: model_year_from: input should be a valid integer",
        ),
        (
            "sim_profiles/taycan.toml",
            'bearers = ["embedded_sim"]',
            'bearers = ["embedded_sim", "carrier_pigeon"]',
            "sim_profiles/taycan.toml: bearers[1]: unknown bearer 'carrier_pigeon'",
        ),
        (
            "roaming/countries/it.toml",
            "mccs = [222]",
            "mccs = [22]",
            "roaming/countries/it.toml: mccs[0]: input should be greater than or equal to 200",
        ),
        (
            "roaming/services.toml",
            "bulk = true  # R18",
            "bulk = 1  # R18",
            "roaming/services.toml: services.software-update.bulk: input should be a valid boolean",
        ),
        (
            "roaming/presence.toml",
            "2g = 120.0\n4g = 60.0\n\n[presence.wifi_hotspot]",
            "2g = -1.0\n4g = 60.0\n\n[presence.wifi_hotspot]",
            "roaming/presence.toml: presence.inserted_sim.2g: "
            "input should be greater than or equal to 0",
        ),
    ],
)
def test_wrong_type_or_value_names_file_field_and_reason(
    data_copy: Path, rel: str, old: str, new: str, expected: str
) -> None:
    _edit(data_copy, rel, old, new)
    assert expected in _error(data_copy)


@pytest.mark.parametrize(
    ("rel", "line", "expected"),
    [
        ("roaming/countries/de.toml", 'name_en = "Germany"\n',
         "roaming/countries/de.toml: name_en: field required"),
        ("sim_profiles/911-7th-gen.toml", "roaming_automatic = false",
         "sim_profiles/911-7th-gen.toml: roaming_automatic: field required"),
        ("sim_profiles/718.toml", 'en = "PHONE > OPT > SET PHONE > Roaming"\n',
         "sim_profiles/718.toml: menus.roaming.en: field required"),
    ],
)
def test_missing_field_names_file_and_field_path(
    data_copy: Path, rel: str, line: str, expected: str
) -> None:
    _edit(data_copy, rel, line, "")
    assert expected in _error(data_copy)


def test_unknown_field_is_refused_so_typos_do_not_pass_silently(data_copy: Path) -> None:
    _edit(data_copy, "roaming/countries/at.toml", "mccs = [232]", "mccs = [232]\nmcc = 232")
    assert "roaming/countries/at.toml: mcc: unknown field" in _error(data_copy)


def test_unknown_service_id_in_a_country_names_the_list_position(data_copy: Path) -> None:
    _edit(data_copy, "roaming/countries/nl.toml", '"car-finder"', '"car-fnder"')  # R12
    assert (
        "roaming/countries/nl.toml: services[1]: unknown service id 'car-fnder'"
        in _error(data_copy)
    )


def test_unknown_service_id_in_the_fallback_is_refused(data_copy: Path) -> None:
    _edit(data_copy, "roaming/fallback.toml", '"car-finder"', '"beam-me-up"')  # R30
    assert "roaming/fallback.toml: services[1]: unknown service id 'beam-me-up'" in _error(
        data_copy
    )


def test_toml_syntax_error_names_file_and_line(data_copy: Path) -> None:
    _edit(data_copy, "roaming/countries/se.toml", 'name_en = "Sweden"', 'name_en = "Sweden')
    message = _error(data_copy)
    assert re.search(r"roaming/countries/se\.toml: line 3, column \d+: TOML syntax error", message)


def test_overlapping_model_years_of_one_model_are_refused(data_copy: Path) -> None:
    _edit(data_copy, "sim_profiles/911-8th-gen-2019.toml", "model_year_from = 2019",
          "model_year_from = 2018")
    assert (
        "sim_profiles/911-8th-gen-2019.toml: model_year_from: 911 MY2018-2021 overlaps "
        "sim_profiles/911-7th-gen.toml (MY2012-2018)"
    ) in _error(data_copy)


def test_same_model_years_of_different_models_do_not_overlap(repo_root: Path) -> None:
    ref = load_reference(repo_root)
    assert ref.profile_for("718", 2018) is not None
    assert ref.profile_for("911", 2018) is not None


def test_duplicate_mcc_names_both_files(data_copy: Path) -> None:
    _edit(data_copy, "roaming/countries/at.toml", "mccs = [232]", "mccs = [232, 262]")
    assert (
        "roaming/countries/de.toml: mccs[0]: 262 is also listed by roaming/countries/at.toml"
        in _error(data_copy)
    )


def test_duplicate_iso_code_names_both_files(data_copy: Path) -> None:
    text = (data_copy / "roaming/countries/de.toml").read_text(encoding="utf-8")
    (data_copy / "roaming/countries/zz.toml").write_text(
        text.replace("mccs = [262]", "mccs = [799]"), encoding="utf-8"
    )
    assert "roaming/countries/zz.toml: iso: 'DE' is also used by roaming/countries/de.toml" in (
        _error(data_copy)
    )


def test_iso_code_must_match_the_file_name(data_copy: Path) -> None:
    (data_copy / "roaming/countries/de.toml").rename(data_copy / "roaming/countries/ge.toml")
    assert "roaming/countries/ge.toml: iso: 'DE' does not match the file name (de.toml)" in (
        _error(data_copy)
    )


def test_roaming_menu_without_roaming_switch_is_inconsistent(data_copy: Path) -> None:
    # R19/R21: a model that roams by itself has no roaming menu, and the other way round.
    _edit(data_copy, "sim_profiles/718.toml", "roaming_automatic = false",
          "roaming_automatic = true")
    assert "sim_profiles/718.toml: menus.roaming must be given exactly when" in _error(data_copy)


def test_sim_pin_without_an_inserted_sim_is_inconsistent(data_copy: Path) -> None:
    _edit(data_copy, "sim_profiles/718.toml",
          'bearers = ["embedded_sim", "inserted_sim", "wifi_hotspot"]',
          'bearers = ["embedded_sim"]')
    assert "sim_profiles/718.toml: sim_pin_applies needs the inserted_sim bearer" in _error(
        data_copy
    )


def test_pairing_code_model_without_pairing_menu_is_refused(data_copy: Path) -> None:
    _edit(data_copy, "sim_profiles/718.toml", "[menus.pairing_code]", "[menus.unused]")
    message = _error(data_copy)
    assert "sim_profiles/718.toml: menus.unused: unknown field" in message


def test_every_problem_is_reported_not_just_the_first(data_copy: Path) -> None:
    _edit(data_copy, "roaming/countries/de.toml", "embedded_sim_fee_free = true",
          "embedded_sim_fee_free = 1")
    _edit(data_copy, "sim_profiles/718.toml", "sim_pin_applies = true", "sim_pin_applies = 1")
    with pytest.raises(ReferenceDataError) as info:
        load_reference(data_copy)
    files = {problem.file for problem in info.value.problems}
    assert files == {"roaming/countries/de.toml", "sim_profiles/718.toml"}


def test_missing_directory_is_named(data_copy: Path) -> None:
    (data_copy / "sim_profiles").rename(data_copy / "profiles_elsewhere")
    assert "sim_profiles: cannot list directory" in _error(data_copy)


@pytest.mark.parametrize(
    "name", ["gps.lat", "latitude", "geohash", "address_text", "nav.destination", "visited_mcc"]
)
def test_a_location_signal_can_never_be_declared_public(data_copy: Path, name: str) -> None:
    # R22: the allowlist is what passes under privacy mode; a position must never be on it.
    _edit(data_copy, "roaming/services.toml", 'public_signals = ["volume_pct"]',
          f'public_signals = ["volume_pct", "{name}"]')
    assert (
        f"roaming/services.toml: services.radio-plus.public_signals[1]: {name!r} "
        "looks like a location; a location is never public (R22)" in _error(data_copy)
    )


def test_personal_data_flag_is_gone_so_no_service_is_exempt_from_privacy(data_copy: Path) -> None:
    # R22: a location is personal whatever the service; the old flag must not come back quietly.
    _edit(data_copy, "roaming/services.toml", 'public_signals = ["volume_pct"]',
          "personal_data = false")
    assert "roaming/services.toml: services.radio-plus.personal_data: unknown field" in _error(
        data_copy
    )
