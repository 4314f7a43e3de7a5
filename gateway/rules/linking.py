"""R5, R7: how a driver links the account to the car, for support and backends.

Resolved from the car's model and model year against sim_profiles/ each time it is asked (the
reference snapshot is current, nothing is stored with the session). An unknown model, or one
without a profile, gives no facts rather than a guess.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from gateway.model import VehicleSession
from gateway.reference.schema import LinkingMethod, MenuPath, SimProfile
from gateway.reference.snapshot import ReferenceData
from gateway.rules.security_code import security_code_decision

__all__ = ["LinkingFacts", "linking_advice", "linking_facts"]

Lang = Literal["en", "de"]


@dataclass(frozen=True, slots=True)
class LinkingFacts:
    """The linking facts of one profile for one model year."""

    method: LinkingMethod
    menu: MenuPath
    alternative_method: LinkingMethod | None  # R5 ambiguity (e.g. MY2021), else None
    alternative_menu: MenuPath | None
    security_code_required: bool  # R7 (country-dependent)


def _menu(profile: SimProfile, method: LinkingMethod) -> MenuPath:
    menu = profile.menus.pairing_code if method == "pairing_code" else profile.menus.account_setup
    # The schema guarantees the menu of every method the profile uses (SimProfile._consistent).
    assert menu is not None, f"{profile.model} {profile.years_label()}: no menu for {method}"
    return menu


def linking_facts(ref: ReferenceData, session: VehicleSession) -> LinkingFacts | None:
    """R5/R7 facts for the car's model and model year; None when either is unknown or no
    profile covers them."""
    if not session.model.strip() or session.model_year <= 0:
        return None
    profile = ref.profile_for(session.model, session.model_year)
    if profile is None:
        return None
    methods = profile.linking.methods_for(session.model_year)
    alternative = methods[1] if len(methods) > 1 else None
    return LinkingFacts(
        method=methods[0],
        menu=_menu(profile, methods[0]),
        alternative_method=alternative,
        alternative_menu=_menu(profile, alternative) if alternative is not None else None,
        # R7 is the model's and the account's country's: the same decision SendRemoteCommand
        # applies, so GetVehicle never says "no code" where a command would ask for one.
        security_code_required=not security_code_decision(ref, session).allowed,
    )


def _t(lang: Lang, en: str, de: str) -> str:
    return en if lang == "en" else de


def _where(menu: MenuPath, lang: Lang) -> str:
    note = menu.note(lang)
    return f"{menu.path(lang)} ({note})" if note else menu.path(lang)


def _how(method: LinkingMethod, menu: MenuPath, lang: Lang) -> str:
    if method == "pairing_code":
        return _t(
            lang,
            f"enter the 8-digit pairing code in the head unit (PCM) under {_where(menu, lang)}",
            f"geben Sie den 8-stelligen Pairing Code im PCM unter {_where(menu, lang)} ein",
        )
    return _t(
        lang,
        f"enter your Porsche ID in the head unit (PCM) under {_where(menu, lang)}",
        f"geben Sie Ihre Porsche ID im PCM unter {_where(menu, lang)} ein",
    )


def linking_advice(ref: ReferenceData, session: VehicleSession, lang: Lang) -> str:
    """R5 method and menu path, R7 security code, in plain words."""
    facts = linking_facts(ref, session)
    if facts is None:
        model = f"{session.model or '?'} {session.model_year or '?'}"
        return _t(
            lang,
            f"The linking method is not known for this vehicle ({model}): the gateway has no "
            "connectivity profile for its model and model year yet. The Porsche Partner can help.",
            f"Die Verknüpfungsmethode ist für dieses Fahrzeug ({model}) nicht bekannt: Für Modell "
            "und Modelljahr ist noch kein Konnektivitätsprofil hinterlegt. Ihr Porsche Partner "
            "hilft weiter.",
        )
    model = f"{session.model} {session.model_year}"
    text = _t(
        lang,
        f"To link the {model} to your Porsche ID, {_how(facts.method, facts.menu, lang)}.",
        f"Um den {model} mit Ihrer Porsche ID zu verknüpfen, "
        f"{_how(facts.method, facts.menu, lang)}.",
    )
    if facts.alternative_method is not None and facts.alternative_menu is not None:
        text += _t(
            lang,
            " For this model year the sources also name the other way: "
            f"{_how(facts.alternative_method, facts.alternative_menu, lang)}.",
            " Für dieses Modelljahr nennen die Quellen auch den anderen Weg: "
            f"{_how(facts.alternative_method, facts.alternative_menu, lang)}.",
        )
    if facts.security_code_required:
        text += _t(
            lang,
            " A security code is required (depending on the country) to log your Porsche ID "
            "into the vehicle and for some remote services; set, change or reset it in "
            "My Porsche under the user settings.",
            " Für die Anmeldung der Porsche ID im Fahrzeug und für einige Remote-Dienste ist "
            "(länderabhängig) ein Sicherheitscode erforderlich; Sie legen ihn in My Porsche in "
            "den Benutzereinstellungen fest, ändern oder setzen ihn zurück.",
        )
    else:
        text += _t(
            lang,
            " No security code is needed for this vehicle.",
            " Für dieses Fahrzeug ist kein Sicherheitscode erforderlich.",
        )
    return text
