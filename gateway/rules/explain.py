"""Plain-words next steps for every decision that holds something back, in English or German.

Menu paths come verbatim from the car's SIM profile, contacts from the country data (R30), so
a text is exactly as right as the data behind it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, assert_never

from gateway.model import Bearer, VehicleSession
from gateway.reference.schema import Country, MenuPath, SimProfile
from gateway.reference.snapshot import ReferenceData
from gateway.rules.decision import Decision, Outcome, Reason
from gateway.rules.evaluate import evaluate, visited_country
from gateway.rules.privacy import withholds_visited_country, without_place

__all__ = ["Explanation", "Lang", "explain", "fod_retry_steps"]

Lang = Literal["en", "de"]


@dataclass(frozen=True, slots=True)
class Explanation:
    decision: Decision
    next_step: str  # what the driver can do, ending with whom to contact
    support_contact: str  # e-mail of the account's country, or the dealer (R30)


def explain(ref: ReferenceData, session: VehicleSession, lang: Lang) -> list[Explanation]:
    """Explain each decision of `evaluate` that is not a plain ALLOW, in `lang`.

    The contact is the one of the car's home country, the account's country (R2, R30); a home
    country not on the support list means the dealer. R22: while privacy withholds the visited
    country, neither the texts nor the decisions' details name it.
    """
    profile = ref.profile_for(session.model, session.model_year)
    ctx = _Context(
        lang=lang,
        ref=ref,
        session=session,
        profile=profile,
        country=visited_country(ref, session),
        contact=_contact(ref.country(session.home_country), lang),
        place_hidden=withholds_visited_country(session.privacy),
    )
    return [
        Explanation(
            decision=without_place(d) if ctx.place_hidden else d,
            next_step=_next_step(d, ctx),
            support_contact=ctx.contact,
        )
        for d in evaluate(ref, session)
        if d.outcome is not Outcome.ALLOW
    ]


# Reasons whose detail (gateway/rules/access.py) names the visited country.
def fod_retry_steps(profile: SimProfile, lang: Lang) -> tuple[str, ...]:
    """R18: what to do when an FoD unlock or an installation failed, step by step."""
    return profile.fod_retry_steps.get(lang)


@dataclass(frozen=True, slots=True)
class _Context:
    lang: Lang
    ref: ReferenceData
    session: VehicleSession
    profile: SimProfile | None
    country: Country
    contact: str
    place_hidden: bool = False  # R22: privacy withholds the visited country

    def t(self, en: str, de: str) -> str:
        return en if self.lang == "en" else de

    def country_name(self) -> str:
        if self.place_hidden:
            return self.t("the car's current country", "dem aktuellen Land des Fahrzeugs")
        return self.country.name(self.lang)

    def service_name(self, decision: Decision) -> str:
        service = self.ref.service(decision.service or "")
        if service is None:
            return decision.service or self.t("the service", "der Dienst")
        return service.name(self.lang)

    def menu(self, menu: MenuPath) -> str:
        note = menu.note(self.lang)
        return f"{menu.path(self.lang)} ({note})" if note else menu.path(self.lang)


_BEARERS: dict[Bearer, tuple[str, str]] = {
    Bearer.EMBEDDED_SIM: ("the integrated SIM", "die integrierte SIM-Karte"),
    Bearer.INSERTED_SIM: ("an inserted SIM card", "eine gesteckte SIM-Karte"),
    Bearer.WIFI_HOTSPOT: ("a phone's Wi-Fi hotspot", "den WLAN-Hotspot eines Mobiltelefons"),
    Bearer.UNSPECIFIED: ("an unknown connection", "eine unbekannte Verbindung"),
}


def _bearer(bearer: Bearer, ctx: _Context) -> str:
    en, de = _BEARERS[bearer]
    return ctx.t(en, de)


def _contact(home: Country, lang: Lang) -> str:
    if home.support_contact is not None:
        return home.support_contact
    return "your Porsche Partner" if lang == "en" else "Ihr Porsche Partner"


def _next_step(decision: Decision, ctx: _Context) -> str:
    text = _action(decision, ctx)
    return text + ctx.t(f" Contact: {ctx.contact}.", f" Kontakt: {ctx.contact}.")


def _action(decision: Decision, ctx: _Context) -> str:
    reason = decision.reason
    match reason:
        case Reason.ROAMING_DISABLED:
            return _roaming(ctx)
        case Reason.PAID_BEARER_BULK:
            name, via = ctx.service_name(decision), _bearer(ctx.session.bearer, ctx)
            return ctx.t(
                f"{name} waits until the car has a connection without roaming fees: at home, "
                f"or abroad over the integrated SIM where it roams free of charge. Over {via} "
                "abroad it could cost roaming fees.",
                f"{name} wartet, bis das Fahrzeug ohne Roaminggebühren verbunden ist: im "
                "Heimatland oder im Ausland über die integrierte SIM-Karte, wo sie kostenfrei "
                f"roamt. Über {via} könnten im Ausland Roamingkosten entstehen.",
            )
        case Reason.IDENTITY_VERIFICATION_REQUIRED:
            country = ctx.country_name()
            return ctx.t(
                f"In {country} telecom law requires your identity to be verified with an official "
                "ID document before the integrated SIM can be used: online by video ident or at "
                "a participating Porsche Partner.",
                f"In {country} muss aus telekommunikationsrechtlichen Gründen Ihre Identität "
                "anhand eines amtlichen Ausweisdokuments verifiziert werden, bevor die "
                "integrierte SIM-Karte genutzt werden kann: online mit dem Video-Ident-Verfahren "
                "oder bei teilnehmenden Porsche Partnern vor Ort.",
            )
        case Reason.BEARER_NOT_SUPPORTED:
            return _bearer_not_supported(ctx)
        case Reason.SERVICE_UNAVAILABLE_IN_COUNTRY:
            return _unavailable(decision, ctx)
        case Reason.PRIVACY_ALL_SERVICES | Reason.PRIVACY_SERVICE_WITHHELD:
            name = ctx.service_name(decision)
            return ctx.t(
                f"Privacy mode is on, so {name} works without your location and personal data. "
                f"To share them again, switch privacy mode off{_privacy_menu(ctx)}.",
                f"Der Privatmodus ist aktiv, daher arbeitet {name} ohne Ihren Standort und "
                "persönliche Daten. Um sie wieder zu teilen, schalten Sie den Privatmodus "
                f"aus{_privacy_menu(ctx)}.",
            )
        case Reason.PRIVACY_MODE_UNKNOWN:
            name = ctx.service_name(decision)
            return ctx.t(
                f"The car has not reported its privacy setting yet, so {name} gets no location "
                "or personal data. Start the car with a data connection so that it reports it.",
                "Das Fahrzeug hat seine Privatsphäre-Einstellung noch nicht gemeldet, daher "
                f"erhält {name} keinen Standort und keine persönlichen Daten. Starten Sie das "
                "Fahrzeug mit Datenverbindung, damit es die Einstellung meldet.",
            )
        case Reason.PRIVACY_REMOTE_COMMANDS:
            return ctx.t(
                "Remote commands are refused while privacy mode is on. Switch privacy mode "
                f"off{_privacy_menu(ctx)} to use them.",
                "Remote-Befehle werden abgelehnt, solange der Privatmodus aktiv ist. Schalten "
                f"Sie den Privatmodus aus{_privacy_menu(ctx)}, um sie zu nutzen.",
            )
        case Reason.NO_SIM_PROFILE:
            model, year = ctx.session.model or "?", ctx.session.model_year
            return ctx.t(
                f"There is no connectivity profile for the {model} of model year {year} yet.",
                f"Für den {model} des Modelljahrs {year} ist noch kein Konnektivitätsprofil "
                "hinterlegt.",
            )
        case Reason.SECURITY_CODE_REQUIRED:
            return ctx.t(
                "Remote services for this car need your security code (R7). Set, change or "
                "reset it in My Porsche under the user settings; after too many wrong codes "
                "remote services are locked for a while.",
                "Remote-Dienste für dieses Fahrzeug benötigen Ihren Sicherheitscode (R7). Sie "
                "legen ihn in My Porsche in den Benutzereinstellungen fest, ändern oder setzen "
                "ihn zurück; nach zu vielen falschen Eingaben sind Remote-Dienste eine Zeit lang "
                "gesperrt.",
            )
        case (
            Reason.PRIVACY_OFF
            | Reason.SECURITY_CODE_NOT_FOR_MODEL
            | Reason.SECURITY_CODE_NOT_IN_COUNTRY
            | Reason.SERVICE_NOT_WITHHELD
            | Reason.HOME_NETWORK
            | Reason.ROAMING_FEE_FREE
            | Reason.ROAMING_ALLOWED
            | Reason.SERVICE_OFFERED
        ):
            return ctx.t("Nothing to do.", "Nichts zu tun.")
        case _:
            assert_never(reason)


def _roaming(ctx: _Context) -> str:
    # R21: the exact head-unit path of this model and model year.
    menu = ctx.profile.menus.roaming if ctx.profile is not None else None
    where = ctx.menu(menu) if menu is not None else ctx.t("in the head unit", "im PCM")
    text = ctx.t(
        f"To use Porsche Connect services abroad, switch on roaming: {where}.",
        f"Um Porsche Connect Dienste im Ausland zu nutzen, aktivieren Sie Roaming: {where}.",
    )
    if ctx.session.bearer is Bearer.INSERTED_SIM:
        text += ctx.t(
            " Depending on your mobile tariff and the country, roaming may cost extra; a "
            "roaming option with included data volume is recommended.",
            " Abhängig vom Mobilfunktarif oder dem besuchten Land können zusätzliche Kosten "
            "entstehen; eine Roaming-Option mit Inklusivvolumen wird empfohlen.",
        )
    return text


def _bearer_not_supported(ctx: _Context) -> str:
    via = _bearer(ctx.session.bearer, ctx)
    if ctx.profile is None:
        return ctx.t(f"The car cannot use data over {via}.",
                     f"Das Fahrzeug kann keine Daten über {via} nutzen.")
    model = ctx.profile.model
    allowed = ctx.t(" or ", " oder ").join(
        _bearer(b, ctx) for b in sorted(ctx.profile.bearers)
    )
    return ctx.t(
        f"The {model} cannot use data over {via}; it connects over {allowed}.",
        f"Der {model} kann keine Daten über {via} nutzen; er verbindet sich über {allowed}.",
    )


def _unavailable(decision: Decision, ctx: _Context) -> str:
    # R12, R30: availability follows local partners; an unlisted country gets reduced services.
    name, country = ctx.service_name(decision), ctx.country_name()
    text = ctx.t(
        f"{name} is not offered in {country}; the Porsche Connect Store shows which services "
        "are available in which country.",
        f"{name} wird in {country} nicht angeboten; welche Dienste in welchem Land verfügbar "
        "sind, zeigt der Porsche Connect Store.",
    )
    if ctx.country.is_fallback and not ctx.place_hidden:  # R22: "not on the list" narrows it
        text += ctx.t(
            " This country is not on the support list, so Porsche Connect works with reduced "
            "functions there; your Porsche Partner can help.",
            " Dieses Land ist nicht in der Support-Liste, daher ist der Funktionsumfang von "
            "Porsche Connect dort reduziert; Ihr Porsche Partner hilft weiter.",
        )
    return text


def _privacy_menu(ctx: _Context) -> str:
    # R22: only the Taycan's privacy menu is documented; other models say "in the head unit".
    menu = ctx.profile.menus.privacy_mode if ctx.profile is not None else None
    if menu is None:
        return ctx.t(" in the head unit", " im PCM")
    return ctx.t(f" (menu: {ctx.menu(menu)})", f" (Menü: {ctx.menu(menu)})")
