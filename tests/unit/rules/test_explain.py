"""explain: next steps with the model's exact menu path and the account country's contact."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from gateway.model import Bearer, Privacy, PrivacyMode, VehicleSession, VehicleState
from gateway.reference import ReferenceData
from gateway.rules import Reason, explain, fod_retry_steps
from gateway.rules.explain import Lang

SessionFactory = Callable[..., VehicleSession]


def _911_my2018_abroad_on_inserted_sim(make_session: SessionFactory) -> VehicleSession:
    return make_session(
        model="911", model_year=2018, visited_country="FR", roaming=True,
        bearer=Bearer.INSERTED_SIM, roaming_enabled=False,
    )


def test_911_my2018_abroad_with_roaming_off_is_told_its_roaming_menu(
    ref: ReferenceData, make_session: SessionFactory
) -> None:
    explanations = explain(ref, _911_my2018_abroad_on_inserted_sim(make_session), "en")
    assert explanations
    assert {e.decision.reason for e in explanations} == {Reason.ROAMING_DISABLED}
    step = explanations[0].next_step
    assert "PHONE > OPT > SET PHONE > Roaming" in step
    assert "(ticked: roaming enabled)" in step
    assert "smartmobility@de.porsche.com" in step
    assert explanations[0].support_contact == "smartmobility@de.porsche.com"


def test_911_my2018_roaming_text_in_german_uses_the_sources_words(
    ref: ReferenceData, make_session: SessionFactory
) -> None:
    [first, *_] = explain(ref, _911_my2018_abroad_on_inserted_sim(make_session), "de")
    assert "PHONE > OPT > SET PHONE > Roaming (Haken gesetzt: Roaming aktiviert)" in first.next_step
    assert "Kontakt: smartmobility@de.porsche.com" in first.next_step


def test_taycan_abroad_gets_no_roaming_complaint(
    ref: ReferenceData, make_session: SessionFactory
) -> None:
    session = make_session(
        model="Taycan", model_year=2022, visited_country="FR", roaming=True,
        bearer=Bearer.EMBEDDED_SIM, roaming_enabled=False,
    )
    assert explain(ref, session, "en") == []


@pytest.mark.parametrize(
    ("model", "year", "menu"),
    [
        ("911", 2020, "SET > Device manager > Options > Mobile data > Roaming"),
        ("Panamera", 2018, "Device manager (under SET or DEVICES, depending on model year) > "
                           "Options > Data connections > Roaming"),
        ("Macan", 2018, "PHONE > OPT > SET PHONE > Roaming"),
        ("Macan", 2019, "SET > Device manager > Options > Mobile data > Roaming"),
    ],
)
def test_roaming_next_step_names_the_menu_of_that_model_year(
    ref: ReferenceData, make_session: SessionFactory, model: str, year: int, menu: str
) -> None:
    session = make_session(model=model, model_year=year, visited_country="AT", roaming=True)
    [first, *_] = explain(ref, session, "en")
    assert menu in first.next_step


def test_taycan_in_privacy_mode_is_told_its_privacy_menu(
    ref: ReferenceData, make_session: SessionFactory
) -> None:
    session = make_session(model="Taycan", model_year=2022,
                           privacy=Privacy(mode=PrivacyMode.ALL_SERVICES))
    explanations = explain(ref, session, "de")
    reasons = {e.decision.reason for e in explanations}
    assert reasons == {Reason.PRIVACY_ALL_SERVICES, Reason.PRIVACY_REMOTE_COMMANDS}
    assert all(
        "Einstellung > Privatsphäre und Porsche Connect Einstellungen > Privatmodus" in e.next_step
        for e in explanations
    )


def test_bulk_download_abroad_on_a_hotspot_explains_the_wait(
    ref: ReferenceData, make_session: SessionFactory
) -> None:
    session = make_session(visited_country="CH", roaming=True, bearer=Bearer.WIFI_HOTSPOT)
    texts = {e.decision.service: e.next_step for e in explain(ref, session, "en")}
    assert set(texts) == {"software-update", "fod-activation"}
    assert texts["software-update"].startswith("Online software update waits")
    assert "a phone's Wi-Fi hotspot" in texts["software-update"]


def test_identity_verification_explains_video_ident_or_dealer(
    ref: ReferenceData, make_session: SessionFactory
) -> None:
    session = make_session(state=VehicleState(identity_verified=False))
    [first, *_] = explain(ref, session, "en")
    assert first.decision.reason is Reason.IDENTITY_VERIFICATION_REQUIRED
    assert "video ident" in first.next_step
    assert "Germany" in first.next_step


def test_unlisted_home_country_points_to_the_dealer(
    ref: ReferenceData, make_session: SessionFactory
) -> None:
    session = make_session(home_country="MX", visited_country="DE", roaming=True,
                           roaming_enabled=True, bearer=Bearer.INSERTED_SIM)
    explanations = explain(ref, session, "en")
    assert explanations  # software-update is bulk on a paid bearer abroad
    assert all(e.support_contact == "your Porsche Partner" for e in explanations)


def test_unavailable_service_names_service_and_country(
    ref: ReferenceData, make_session: SessionFactory
) -> None:
    session = make_session(visited_country="RU", roaming=True, roaming_enabled=True)
    texts = {e.decision.service: e.next_step for e in explain(ref, session, "de")}
    assert texts["charging"].startswith("Charging Service wird in Russland nicht angeboten")


def test_taycan_on_an_inserted_sim_is_told_it_uses_the_integrated_sim(
    ref: ReferenceData, make_session: SessionFactory
) -> None:
    session = make_session(model="Taycan", model_year=2022, bearer=Bearer.INSERTED_SIM)
    [first, *_] = explain(ref, session, "en")
    assert first.next_step.startswith(
        "The Taycan cannot use data over an inserted SIM card; it connects over the integrated SIM."
    )


@pytest.mark.parametrize("lang", ["en", "de"])
def test_every_decision_that_holds_something_back_gets_text_in_both_languages(
    ref: ReferenceData, make_session: SessionFactory, lang: Lang
) -> None:
    sessions = [
        _911_my2018_abroad_on_inserted_sim(make_session),
        make_session(privacy=Privacy(mode=PrivacyMode.UNSPECIFIED)),
        make_session(model="959", model_year=1988),
    ]
    for session in sessions:
        for explanation in explain(ref, session, lang):
            assert explanation.next_step
            assert "Nothing to do" not in explanation.next_step


def test_fod_retry_steps_in_both_languages(ref: ReferenceData) -> None:
    profile = ref.profile_for("Taycan", 2024)
    assert profile is not None
    assert fod_retry_steps(profile, "en")[2] == "Wait about 10 minutes."  # R18
    assert fod_retry_steps(profile, "de")[2] == "Warten Sie ca. 10 Minuten."


def _abroad_in_privacy(make_session: SessionFactory, mode: PrivacyMode, iso: str) -> VehicleSession:
    # Abroad on an inserted SIM with roaming off, identity not verified: every place-naming text.
    return make_session(
        visited_country=iso, visited_mcc=0, roaming=True, bearer=Bearer.INSERTED_SIM,
        roaming_enabled=False, privacy=Privacy(mode=mode),
        state=VehicleState(identity_verified=False),
    )


PLACES = {
    "RU": ("RU", "Russia", "Russland"),
    "ES": ("ES", "Spain", "Spanien"),
    "CN": ("CN", "China", "China"),
    "ZZ": ("ZZ", "not on the support list", "nicht in der Support-Liste"),
}


@pytest.mark.parametrize("mode", [PrivacyMode.ALL_SERVICES, PrivacyMode.UNSPECIFIED])
@pytest.mark.parametrize("iso", sorted(PLACES))
@pytest.mark.parametrize("lang", ["en", "de"])
def test_explain_never_names_the_visited_country_while_privacy_withholds_it(
    ref: ReferenceData, make_session: SessionFactory, mode: PrivacyMode, iso: str, lang: Lang
) -> None:
    session = _abroad_in_privacy(make_session, mode, iso)
    explanations = explain(ref, session, lang)
    assert explanations
    for e in explanations:
        for word in PLACES[iso]:
            assert word not in e.next_step, (e.decision.reason, e.next_step)
            assert word not in e.decision.detail, (e.decision.reason, e.decision.detail)


def test_explain_names_the_visited_country_while_privacy_is_off(
    ref: ReferenceData, make_session: SessionFactory
) -> None:
    session = _abroad_in_privacy(make_session, PrivacyMode.OFF, "RU")
    texts = [e.next_step + e.decision.detail for e in explain(ref, session, "en")]
    assert any("Russia" in t for t in texts)
