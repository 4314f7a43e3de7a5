"""Why an entitlement has not reached the car yet, in plain English or German.

Pure: the engine passes the facts (the vehicle's session, R12 availability, the R17 decision
`eligibility.fod_window` that also gates the engine's FoD commands, the R18 retry time).
Model-specific R18 steps come from the reference data through the engine's `fod_retry_steps`
hook; `generic_fod_retry_steps` is the fallback."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from gateway.entitlements.domain.eligibility import Blocker, BlockerCode, FodWindow
from gateway.entitlements.domain.types import Entitlement, EntitlementState
from gateway.model import Presence, VehicleSession
from gateway.rules.privacy import withholds_visited_country

S = EntitlementState


@dataclass(frozen=True, slots=True)
class EntitlementBlocker:
    """One thing between an entitlement and the car (telematics.v1.Blocker)."""

    code: str  # machine-readable, e.g. "charging_cable_connected"
    rule: str  # "R12", "R13", "R17", "R18"
    next_step: str  # plain words in the requested language


def _t(lang: str, en: str, de: str) -> str:
    return de if lang == "de" else en


def _hhmm(t: float) -> str:
    return datetime.fromtimestamp(t, tz=UTC).strftime("%Y-%m-%d %H:%M UTC")


_R18_STEPS = (
    (
        "Disconnect the charging cable.",
        "Switch the vehicle off with the power button.",
        "Leave the vehicle and lock it.",
        "Wait about 10 minutes.",
        "Restart the vehicle. If the function is still not unlocked, follow the head unit's "
        "instructions or contact your Porsche Partner.",
    ),
    (
        "Trennen Sie das Ladekabel.",
        "Schalten Sie das Fahrzeug mit dem Startknopf aus.",
        "Verlassen Sie das Fahrzeug und verriegeln Sie es.",
        "Warten Sie etwa 10 Minuten.",
        "Starten Sie das Fahrzeug neu. Ist die Funktion dann noch nicht freigeschaltet, folgen "
        "Sie den Hinweisen im Zentraldisplay oder wenden Sie sich an Ihren Porsche Partner.",
    ),
)


def generic_fod_retry_steps(session: VehicleSession, lang: str) -> tuple[str, ...]:
    """R18 steps for any model (the reference data has the model-specific ones)."""
    return _R18_STEPS[1] if lang == "de" else _R18_STEPS[0]


_FOD_TEXTS: dict[BlockerCode, tuple[str, str]] = {
    BlockerCode.NEVER_CONNECTED: (
        "The vehicle has never connected to the gateway; connect it to the internet.",
        "Das Fahrzeug war noch nie mit dem Gateway verbunden; verbinden Sie es mit dem Internet.",
    ),
    BlockerCode.OFFLINE: (
        "Connect the vehicle to the internet.",
        "Verbinden Sie das Fahrzeug mit dem Internet.",
    ),
    BlockerCode.LINK_POOR: (
        "The vehicle needs a good data connection; move it to a place with better reception.",
        "Das Fahrzeug braucht eine gute Datenverbindung; stellen Sie es an einen Ort mit "
        "besserem Empfang.",
    ),
    BlockerCode.PRIVACY_ON: ("Switch privacy mode off.", "Schalten Sie den Privatmodus aus."),
    BlockerCode.CHARGING_CABLE_CONNECTED: (
        "Disconnect the charging cable.",
        "Trennen Sie das Ladekabel.",
    ),
    BlockerCode.POWER_ON: (
        "Switch the vehicle off with the power button.",
        "Schalten Sie das Fahrzeug mit dem Startknopf aus.",
    ),
    BlockerCode.UNLOCKED: (
        "Leave the vehicle and lock it.",
        "Verlassen Sie das Fahrzeug und verriegeln Sie es.",
    ),
    BlockerCode.IDLE_WAIT: (
        "Leave the vehicle locked and switched off for about {minutes} more minutes; the "
        "function is then installed automatically.",
        "Lassen Sie das Fahrzeug noch etwa {minutes} Minuten verriegelt und ausgeschaltet; die "
        "Funktion wird dann automatisch installiert.",
    ),
}


def fod_blocker(blocker: Blocker, idle_left_s: float | None, lang: str) -> EntitlementBlocker:
    """An R17 blocker in the driver's language; the idle wait says how long is left."""
    en, de = _FOD_TEXTS[blocker.code]
    text = _t(lang, en, de)
    if blocker.code is BlockerCode.IDLE_WAIT:
        text = text.format(minutes=max(1, round((idle_left_s or 0.0) / 60)))
    return EntitlementBlocker(blocker.code.value, blocker.rules[0], text)


def not_offered_for_model(e: Entitlement, session: VehicleSession, lang: str) -> EntitlementBlocker:
    """The car's Hello showed a model the product is not sold for: it is never delivered (see
    domain/offer.py). The rule is the product catalogue, not a numbered domain rule."""
    model, year = session.model, session.model_year
    return EntitlementBlocker(
        "not_offered_for_model",
        "catalogue",
        _t(
            lang,
            f"{e.product_id} is not offered for the {model} of model year {year}, so it is not "
            "delivered to this vehicle. Please contact your Porsche Partner about cancelling "
            "the order.",
            f"{e.product_id} wird für den {model} des Modelljahrs {year} nicht angeboten und "
            "daher nicht an dieses Fahrzeug geliefert. Bitte wenden Sie sich wegen einer "
            "Stornierung der Bestellung an Ihren Porsche Partner.",
        ),
    )


def explain_service(
    e: Entitlement,
    session: VehicleSession | None,
    *,
    available: tuple[bool, str],
    ack_overdue: bool,
    lang: str,
) -> list[EntitlementBlocker]:
    """R12/R13 blockers of a service not yet active (empty: it is on its way)."""
    online = session is not None and session.presence is Presence.ONLINE
    offline = EntitlementBlocker(
        "offline",
        "R13",
        _t(
            lang,
            "Connect the vehicle to the internet and restart it: ordered services appear after "
            "the next restart while the vehicle is online.",
            "Verbinden Sie das Fahrzeug mit dem Internet und starten Sie es neu: bestellte "
            "Dienste erscheinen nach dem nächsten Neustart mit Internetverbindung.",
        ),
    )
    match e.state:
        case S.PENDING:
            blockers = [] if online else [offline]
            ok, reason = available
            if not ok:
                country = session.visited_country if session is not None else ""
                # R22: while privacy withholds the visited country, the text does not name it
                # (nor the rule's detail, which does).
                hidden = session is None or withholds_visited_country(session.privacy)
                where_en = "" if hidden else f" ({country or 'unknown'}: {reason})"
                where_de = "" if hidden else f" ({country or 'unbekannt'}: {reason})"
                blockers.append(
                    EntitlementBlocker(
                        "unavailable_in_country",
                        "R12",
                        _t(
                            lang,
                            f"{e.product_id} is not offered in the country the vehicle is in"
                            f"{where_en}. It is delivered after a restart "
                            "in a country where it is offered.",
                            f"{e.product_id} wird im aktuellen Land des Fahrzeugs nicht angeboten"
                            f"{where_de}. Der Dienst wird nach einem "
                            "Neustart in einem Land geliefert, in dem er angeboten wird.",
                        ),
                    )
                )
            if online:
                blockers.append(
                    EntitlementBlocker(
                        "restart_required",
                        "R13",
                        _t(
                            lang,
                            "Restart the vehicle while it is connected to the internet; the "
                            "service then appears in the head unit.",
                            "Starten Sie das Fahrzeug mit Internetverbindung neu; der Dienst "
                            "erscheint dann im Zentraldisplay.",
                        ),
                    )
                )
            return blockers
        case S.DELIVERY_DUE | S.REVOKE_PENDING:
            return [] if online else [offline]
        case S.DELIVERED if ack_overdue:
            return [
                EntitlementBlocker(
                    "ack_overdue",
                    "R13",
                    _t(
                        lang,
                        "The vehicle has not confirmed the new services. Restart it while it is "
                        "connected to the internet; they are sent again.",
                        "Das Fahrzeug hat die neuen Dienste nicht bestätigt. Starten Sie es mit "
                        "Internetverbindung neu; sie werden erneut gesendet.",
                    ),
                )
            ]
        case _:
            return []


def explain_fod(
    e: Entitlement,
    window: FodWindow,
    *,
    now: float,
    retry_at: float | None,
    retry_steps: tuple[str, ...],
    lang: str,
) -> list[EntitlementBlocker]:
    """R17 blockers of an FoD unlock or revoke (`window`: the decision the engine acts on), and
    after a failure the R18 steps."""
    blockers = [fod_blocker(b, window.idle_left_s, lang) for b in window.blockers]
    if e.failures > 0 or e.state is S.FAILED:
        if retry_at is not None and retry_at > now:
            blockers.append(
                EntitlementBlocker(
                    "retry_backoff",
                    "R18",
                    _t(
                        lang,
                        f"The last attempt failed; the gateway tries again from {_hhmm(retry_at)}.",
                        f"Der letzte Versuch ist fehlgeschlagen; das Gateway versucht es ab "
                        f"{_hhmm(retry_at)} erneut.",
                    ),
                )
            )
        blockers.append(EntitlementBlocker("unlock_failed", "R18", " ".join(retry_steps)))
    return blockers
