"""roaming/: the 45 countries of the source's support list, services, fallback, presence."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from gateway.reference import Country, ReferenceData

COUNTRY_DIR = Path(__file__).resolve().parents[3] / "roaming" / "countries"
COUNTRY_FILES = sorted(p.name for p in COUNTRY_DIR.glob("*.toml"))

# R30: the source's list, German name -> (ISO code, support e-mail)
SUPPORT_LIST: dict[str, tuple[str, str]] = {
    "Albanien": ("AL", "smartmobility@al.porsche.com"),
    "Andorra": ("AD", "smartmobility@ad.porsche.com"),
    "Australien": ("AU", "connect@porsche.com.au"),
    "Österreich": ("AT", "smartmobility@at.porsche.com"),
    "Belgien": ("BE", "smartmobility@be.porsche.com"),
    "Bosnien-Herzegowina": ("BA", "smartmobility@ba.porsche.com"),
    "Bulgarien": ("BG", "smartmobility@bg.porsche.com"),
    "Kanada": ("CA", "connect@porsche.ca"),
    "China": ("CN", "connect@cn.porsche.com"),
    "Kroatien": ("HR", "smartmobility@hr.porsche.com"),
    "Zypern": ("CY", "smartmobility@cy.porsche.com"),
    "Tschechische Republik": ("CZ", "smartmobility@cz.porsche.com"),
    "Dänemark": ("DK", "smartmobility@dk.porsche.com"),
    "Estland": ("EE", "smartmobility@ee.porsche.com"),
    "Finnland": ("FI", "smartmobility@fi.porsche.com"),
    "Frankreich": ("FR", "smartmobility@fr.porsche.com"),
    "Deutschland": ("DE", "smartmobility@de.porsche.com"),
    "Gibraltar": ("GI", "smartmobility@porsche.co.uk"),
    "Großbritannien": ("GB", "smartmobility@porsche.co.uk"),
    "Griechenland": ("GR", "smartmobility@gr.porsche.com"),
    "Hongkong": ("HK", "connect@cn.porsche.com"),
    "Ungarn": ("HU", "smartmobility@hu.porsche.com"),
    "Island": ("IS", "smartmobility@is.porsche.com"),
    "Irland": ("IE", "smartmobility@porsche.co.uk"),
    "Italien": ("IT", "smartmobility@it.porsche.com"),
    "Japan": ("JP", "connect@jp.porsche.com"),
    "Lettland": ("LV", "smartmobility@lv.porsche.com"),
    "Liechtenstein": ("LI", "smartmobility@li.porsche.com"),
    "Litauen": ("LT", "smartmobility@lt.porsche.com"),
    "Luxemburg": ("LU", "smartmobility@lu.porsche.com"),
    "Malta": ("MT", "smartmobility@mt.porsche.com"),
    "Monaco": ("MC", "smartmobility@mc.porsche.com"),
    "Niederlande": ("NL", "smartmobility@nl.porsche.com"),
    "Norwegen": ("NO", "smartmobility@no.porsche.com"),
    "Polen": ("PL", "smartmobility@pl.porsche.com"),
    "Portugal": ("PT", "smartmobility@pt.porsche.com"),
    "Rumänien": ("RO", "smartmobility@ro.porsche.com"),
    "Russland": ("RU", "connect@porsche.ru"),
    "Slowakei": ("SK", "smartmobility@sk.porsche.com"),
    "Slowenien": ("SI", "smartmobility@si.porsche.com"),
    "Spanien": ("ES", "smartmobility@es.porsche.com"),
    "Schweden": ("SE", "smartmobility@se.porsche.com"),
    "Schweiz": ("CH", "smartmobility@ch.porsche.com"),
    "Taiwan": ("TW", "connect@porsche.tw"),
    "USA": ("US", "connect@porsche.us"),
}

EU_EEA_CH_GB = {
    "AT", "BE", "BG", "HR", "CY", "CZ", "DK", "EE", "FI", "FR", "DE", "GR", "HU", "IE",
    "IT", "LV", "LT", "LU", "MT", "NL", "PL", "PT", "RO", "SK", "SI", "ES", "SE",  # EU 27
    "IS", "LI", "NO", "CH", "GB",
}


def _load(name: str) -> Country:
    return Country.model_validate(tomllib.loads((COUNTRY_DIR / name).read_text("utf-8")))


def test_the_support_list_has_45_countries_one_file_each() -> None:
    assert len(SUPPORT_LIST) == 45
    assert sorted(f"{iso.lower()}.toml" for iso, _ in SUPPORT_LIST.values()) == COUNTRY_FILES


@pytest.mark.parametrize("name_de", sorted(SUPPORT_LIST))
def test_country_file_loads_with_the_sources_name_and_support_contact(name_de: str) -> None:
    iso, email = SUPPORT_LIST[name_de]
    country = _load(f"{iso.lower()}.toml")
    assert (country.iso, country.name_de, country.support_contact) == (iso, name_de, email)
    assert country.services, "R12: every listed country offers some services"


@pytest.mark.parametrize(
    ("mcc", "iso"),
    [(262, "DE"), (208, "FR"), (234, "GB"), (235, "GB"), (266, "GI"), (272, "IE"),
     (460, "CN"), (461, "CN"), (454, "HK"), (466, "TW"), (440, "JP"), (441, "JP"),
     (302, "CA"), (310, "US"), (316, "US"), (505, "AU"), (250, "RU"), (228, "CH"),
     (295, "LI"), (213, "AD"), (212, "MC"), (276, "AL"), (218, "BA")],
)
def test_country_for_mcc_finds_the_itu_owner(ref: ReferenceData, mcc: int, iso: str) -> None:
    country = ref.country_for_mcc(mcc)
    assert country is not None and country.iso == iso


def test_country_for_mcc_of_an_unlisted_country_is_none(ref: ReferenceData) -> None:
    assert ref.country_for_mcc(334) is None  # Mexico


def test_integrated_sim_is_fee_free_in_eu_eea_switzerland_and_uk_only(ref: ReferenceData) -> None:
    # R21 "in the supported countries", read as the 32 of EU/EEA + CH + GB ("über 30 Ländern").
    fee_free = {iso for iso, c in ref.countries.items() if c.embedded_sim_fee_free}
    assert fee_free == EU_EEA_CH_GB
    assert len(fee_free) == 32


def test_identity_verification_countries_are_the_documented_assumption(ref: ReferenceData) -> None:
    required = {iso for iso, c in ref.countries.items() if c.identity_verification_required}
    assert required == {"DE", "IT", "ES", "PL", "CN", "JP", "RU"}  # R25, see roaming/README.md


def test_unlisted_country_gets_the_dealer_and_reduced_services(ref: ReferenceData) -> None:
    mexico = ref.country("mx")  # R30
    assert mexico.is_fallback
    assert mexico.iso == "MX"
    assert mexico.support_contact is None
    assert set(mexico.services) < set(ref.services)
    assert not mexico.embedded_sim_fee_free


def test_country_lookup_ignores_case_and_spaces(ref: ReferenceData) -> None:
    assert ref.country(" de ").name_en == "Germany"
    assert not ref.country("de").is_fallback


SERVICES = {
    # id: (public_signals R22, bulk R20/R21)
    "remote-services": (("soc_pct", "range_km", "lock_state"), False),
    "car-finder": ((), False),
    "navigation-plus": ((), False),
    "charging": (("soc_pct", "charge_power_kw"), False),
    "radio-plus": (("volume_pct",), False),
    "voice-pilot": ((), False),
    "software-update": (("download_pct",), True),
    "fod-activation": ((), True),
}


@pytest.mark.parametrize("service_id", sorted(SERVICES))
def test_service_catalogue_lists_public_signals_and_bulk(
    ref: ReferenceData, service_id: str
) -> None:
    service = ref.service(service_id)
    assert service is not None
    assert (service.public_signals, service.bulk) == SERVICES[service_id]


def test_unknown_service_id_is_none(ref: ReferenceData) -> None:
    assert ref.service("teleportation") is None


def test_every_country_service_is_in_the_catalogue(ref: ReferenceData) -> None:
    for country in ref.countries.values():
        assert set(country.services) <= set(ref.services), country.iso


def test_snapshot_maps_cannot_be_changed(ref: ReferenceData) -> None:
    with pytest.raises(TypeError):
        ref.countries["XX"] = ref.countries["DE"]  # type: ignore[index]  # read-only: what is tested
