"""Pydantic schemas of the shipped reference data (`sim_profiles/`, `roaming/`).

One model per file kind. Scalars are strict (a TOML string "true" is not a bool, "2019" is not
a year), unknown keys are errors, and every model is frozen. Rules in a docstring or comment
are the domain rules of docs/domain-rules.md that the field carries as data.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from types import MappingProxyType
from typing import Annotated, Any, Literal, assert_never

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    Strict,
    StrictBool,
    StrictInt,
    StrictStr,
    model_validator,
)

from gateway.model import Bearer

__all__ = [
    "Country",
    "FallbackCountry",
    "Linking",
    "LinkingMethod",
    "LocalizedSteps",
    "LocalizedText",
    "MenuPath",
    "Menus",
    "ModelOffer",
    "PresenceGrace",
    "Product",
    "ProductCatalogue",
    "ProductKind",
    "RadioKey",
    "Service",
    "ServiceCatalogue",
    "SimProfile",
]

# Deliberately simple (no e-mail-validator dependency): one "@", a dotted domain, no spaces.
_EMAIL = re.compile(r"[^@\s]+@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+")
_SERVICE_ID = re.compile(r"[a-z][a-z0-9]*(-[a-z0-9]+)*")
_SIGNAL_NAME = re.compile(r"[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)*")
# R22: names of a position or of something derived from it. A signal named like this can never
# be declared public, so a data-file slip cannot release a location under privacy mode. Whole
# words (split at "." and "_") plus unambiguous fragments ("geohash", "gps_fix").
_LOCATION_WORDS = frozenset({
    "lat", "latitude", "lon", "lng", "long", "longitude", "alt", "altitude", "gps", "gnss", "geo",
    "geohash", "pos", "position", "location", "loc", "coord", "coords", "coordinates", "address",
    "street", "city", "zip", "postcode", "postal", "place", "poi", "route", "destination", "dest",
    "heading", "bearing", "mcc", "mnc", "country", "region", "cell", "cellid", "wifi", "ssid",
    "bssid", "trip", "odometer",
})
_LOCATION_FRAGMENTS = ("geo", "gps", "gnss", "latitude", "longitude", "location", "position",
                       "coord", "address")


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


def _email(value: str) -> str:
    if _EMAIL.fullmatch(value) is None:
        raise ValueError("value is not a valid email")
    return value


def _service_id(value: str) -> str:
    if _SERVICE_ID.fullmatch(value) is None:
        raise ValueError(f"{value!r} is not a service id (lower-case words joined by '-')")
    return value


def _product_id(value: str) -> str:
    if _SERVICE_ID.fullmatch(value) is None:
        raise ValueError(f"{value!r} is not a product id (lower-case words joined by '-')")
    return value


def _public_signal(value: str) -> str:
    if _SIGNAL_NAME.fullmatch(value) is None:
        raise ValueError(f"{value!r} is not a signal name (lower-case words joined by '.' or '_')")
    words = set(re.split(r"[._]", value))
    if words & _LOCATION_WORDS or any(f in value for f in _LOCATION_FRAGMENTS):
        raise ValueError(f"{value!r} looks like a location; a location is never public (R22)")
    return value


def _bearer(value: object) -> Bearer:
    # Data files name bearers in snake case ("embedded_sim"); the enum is gateway.model.Bearer.
    if isinstance(value, Bearer):
        return value
    names = ", ".join(b.name.lower() for b in Bearer if b is not Bearer.UNSPECIFIED)
    if isinstance(value, str) and value.upper() in Bearer.__members__:
        bearer = Bearer[value.upper()]
        if bearer is not Bearer.UNSPECIFIED:
            return bearer
    raise ValueError(f"unknown bearer {value!r} (expected one of {names})")


def _unique(values: tuple[Any, ...]) -> tuple[Any, ...]:
    seen: set[Any] = set()
    for value in values:
        if value in seen:
            raise ValueError(f"{value!r} is listed twice")
        seen.add(value)
    return values


Email = Annotated[StrictStr, AfterValidator(_email)]
ServiceId = Annotated[StrictStr, AfterValidator(_service_id)]
ProductId = Annotated[StrictStr, AfterValidator(_product_id)]
PublicSignal = Annotated[StrictStr, AfterValidator(_public_signal)]
BearerName = Annotated[Bearer, BeforeValidator(_bearer)]
ModelYear = Annotated[StrictInt, Field(ge=1990, le=2100)]
Mcc = Annotated[StrictInt, Field(ge=200, le=799)]  # ITU-T E.212: 2xx Europe .. 7xx S. America
NonEmpty = Annotated[StrictStr, Field(min_length=1)]
LinkingMethod = Literal["pairing_code", "account_id"]


class LocalizedText(_Frozen):
    en: NonEmpty
    de: NonEmpty

    def get(self, lang: Literal["en", "de"]) -> str:
        return self.en if lang == "en" else self.de


class MenuPath(_Frozen):
    """A head-unit menu path, verbatim from the source (de) and translated (en)."""

    de: NonEmpty
    en: NonEmpty
    note_de: NonEmpty | None = None
    note_en: NonEmpty | None = None

    @model_validator(mode="after")
    def _notes_in_both_languages(self) -> MenuPath:
        if (self.note_de is None) != (self.note_en is None):
            raise ValueError("note_de and note_en must be given together")
        return self

    def path(self, lang: Literal["en", "de"]) -> str:
        return self.en if lang == "en" else self.de

    def note(self, lang: Literal["en", "de"]) -> str | None:
        return self.note_en if lang == "en" else self.note_de


class Menus(_Frozen):
    roaming: MenuPath | None = None  # R21; absent when roaming is automatic (Taycan)
    data_off: MenuPath  # R22
    privacy_mode: MenuPath | None = None  # R22; only documented for the Taycan
    sim_pin: MenuPath | None = None  # R23; absent when no SIM PIN applies (Taycan)
    pairing_code: MenuPath | None = None  # R5; pairing-code models only
    account_setup: MenuPath | None = None  # R5; account-id models only


class LocalizedSteps(_Frozen):
    en: tuple[NonEmpty, ...] = Field(min_length=1)
    de: tuple[NonEmpty, ...] = Field(min_length=1)

    @model_validator(mode="after")
    def _same_number_of_steps(self) -> LocalizedSteps:
        if len(self.en) != len(self.de):
            raise ValueError(f"en has {len(self.en)} steps, de has {len(self.de)}")
        return self

    def get(self, lang: Literal["en", "de"]) -> tuple[str, ...]:
        return self.en if lang == "en" else self.de


class Linking(_Frozen):
    """R5: how an account is linked to the car, and the model years the source disagrees on."""

    method: LinkingMethod
    ambiguous_model_years: tuple[ModelYear, ...] = ()
    alternative_method: LinkingMethod | None = None

    @model_validator(mode="after")
    def _alternative_only_with_ambiguity(self) -> Linking:
        if bool(self.ambiguous_model_years) != (self.alternative_method is not None):
            raise ValueError("ambiguous_model_years and alternative_method go together")
        if self.alternative_method == self.method:
            raise ValueError("alternative_method must differ from method")
        return self

    def methods_for(self, model_year: int) -> tuple[LinkingMethod, ...]:
        if self.alternative_method is not None and model_year in self.ambiguous_model_years:
            return (self.method, self.alternative_method)
        return (self.method,)


_MENU_FOR_METHOD: dict[str, str] = {"pairing_code": "pairing_code", "account_id": "account_setup"}


class SimProfile(_Frozen):
    """One model family over a model-year range (`sim_profiles/*.toml`)."""

    model: NonEmpty
    model_year_from: ModelYear
    model_year_to: ModelYear | None = None  # open end
    generation: LocalizedText
    bearers: Annotated[frozenset[BearerName], Field(min_length=1)]  # R19, R20
    roaming_automatic: StrictBool  # R19, R21
    sim_pin_applies: StrictBool  # R23
    linking: Linking  # R5
    security_code_required: StrictBool  # R7
    privacy_per_service: StrictBool  # R22
    menus: Menus
    fod_retry_steps: LocalizedSteps  # R18

    @model_validator(mode="after")
    def _consistent(self) -> SimProfile:
        if self.model_year_to is not None and self.model_year_to < self.model_year_from:
            raise ValueError("model_year_to is before model_year_from")
        for year in self.linking.ambiguous_model_years:
            if not self.covers(year):
                raise ValueError(f"linking.ambiguous_model_years: {year} is outside the range")
        # R21: a menu to switch roaming on exactly when the car does not roam by itself.
        if self.roaming_automatic == (self.menus.roaming is not None):
            raise ValueError("menus.roaming must be given exactly when roaming_automatic = false")
        # R23: a SIM PIN belongs to an inserted SIM.
        if self.sim_pin_applies and Bearer.INSERTED_SIM not in self.bearers:
            raise ValueError("sim_pin_applies needs the inserted_sim bearer")
        if self.sim_pin_applies != (self.menus.sim_pin is not None):
            raise ValueError("menus.sim_pin must be given exactly when sim_pin_applies = true")
        if self.privacy_per_service and self.menus.privacy_mode is None:
            raise ValueError("privacy_per_service needs menus.privacy_mode")
        methods = {self.linking.method, self.linking.alternative_method} - {None}
        for method, menu in _MENU_FOR_METHOD.items():
            if (method in methods) != (getattr(self.menus, menu) is not None):
                raise ValueError(f"menus.{menu} must be given exactly when linking uses {method}")
        return self

    def covers(self, model_year: int) -> bool:
        upper = self.model_year_to if self.model_year_to is not None else model_year
        return self.model_year_from <= model_year <= upper

    def years_label(self) -> str:
        end = "" if self.model_year_to is None else str(self.model_year_to)
        return f"MY{self.model_year_from}-{end}"


class Service(_Frozen):
    """One entry of `roaming/services.toml`; `id` is the table key."""

    id: ServiceId
    name_en: NonEmpty
    name_de: NonEmpty
    # R22: the signal names of this service that carry nothing personal: the only signals that
    # pass while privacy mode covers the service (an allowlist; fail closed). A location is
    # personal whatever the service, so no flag exempts a service from privacy mode.
    public_signals: Annotated[tuple[PublicSignal, ...], AfterValidator(_unique)] = ()
    bulk: StrictBool  # R20, R21: large transfers, deferred on paid bearers abroad

    def name(self, lang: Literal["en", "de"]) -> str:
        return self.name_en if lang == "en" else self.name_de


class ServiceCatalogue(_Frozen):
    """`roaming/services.toml`: `[services.<id>]` tables, in catalogue order."""

    services: Annotated[Mapping[ServiceId, Service], Field(min_length=1)]

    @model_validator(mode="before")
    @classmethod
    def _ids_from_keys(cls, data: object) -> object:
        # The id is the table key; it is copied in so a Service knows its own id.
        if isinstance(data, dict) and isinstance(data.get("services"), dict):
            services = {
                key: {"id": key, **value} if isinstance(value, dict) else value
                for key, value in data["services"].items()
            }
            return {**data, "services": services}
        return data

    @model_validator(mode="after")
    def _keys_match_ids(self) -> ServiceCatalogue:
        for key, service in self.services.items():
            if key != service.id:
                raise ValueError(f"services.{key}: id {service.id!r} differs from the table key")
        return self


ProductKind = Literal["service", "fod"]


class ModelOffer(_Frozen):
    """One model family over a model-year range that a product is offered for."""

    model: NonEmpty  # a `model` of sim_profiles/ (the loader cross-checks it)
    model_year_from: ModelYear
    model_year_to: ModelYear | None = None  # open end

    @model_validator(mode="after")
    def _ordered(self) -> ModelOffer:
        if self.model_year_to is not None and self.model_year_to < self.model_year_from:
            raise ValueError("model_year_to is before model_year_from")
        return self

    def covers(self, model: str, model_year: int) -> bool:
        if self.model.casefold() != model.strip().casefold():
            return False
        upper = self.model_year_to if self.model_year_to is not None else model_year
        return self.model_year_from <= model_year <= upper

    def label(self) -> str:
        end = "" if self.model_year_to is None else str(self.model_year_to)
        return f"{self.model} MY{self.model_year_from}-{end}"


class Product(_Frozen):
    """One entry of `roaming/products.toml`: what the store may sell; `id` is the table key.

    A service product belongs to a service of `roaming/services.toml` (R12 country availability
    and R22 privacy follow that service); a Function on Demand is unlocked in the car (R14-R17).
    """

    id: ProductId
    kind: ProductKind
    name_en: NonEmpty
    name_de: NonEmpty
    service: ServiceId | None = None  # kind = "service" only; the loader checks it exists
    offered_for: Annotated[tuple[ModelOffer, ...], Field(min_length=1)]

    @model_validator(mode="after")
    def _service_exactly_for_services(self) -> Product:
        if (self.kind == "service") != (self.service is not None):
            raise ValueError('service must be given exactly when kind = "service"')
        return self

    def name(self, lang: Literal["en", "de"]) -> str:
        return self.name_en if lang == "en" else self.name_de

    def offered(self, model: str, model_year: int) -> bool:
        """Is it sold for this model family (case-insensitive) and model year?"""
        return any(offer.covers(model, model_year) for offer in self.offered_for)

    def offers_label(self) -> str:
        return ", ".join(offer.label() for offer in self.offered_for)


class ProductCatalogue(_Frozen):
    """`roaming/products.toml`: `[products.<id>]` tables, in catalogue order."""

    products: Annotated[Mapping[ProductId, Product], Field(min_length=1)]

    @model_validator(mode="before")
    @classmethod
    def _ids_from_keys(cls, data: object) -> object:
        # The id is the table key; it is copied in so a Product knows its own id.
        if isinstance(data, dict) and isinstance(data.get("products"), dict):
            products = {
                key: {"id": key, **value} if isinstance(value, dict) else value
                for key, value in data["products"].items()
            }
            return {**data, "products": products}
        return data


class Country(_Frozen):
    """One country of the support list (`roaming/countries/<iso>.toml`)."""

    iso: Annotated[StrictStr, Field(pattern=r"^[A-Z]{2}$")]  # ISO 3166-1 alpha-2
    name_en: NonEmpty
    name_de: NonEmpty
    mccs: Annotated[tuple[Mcc, ...], AfterValidator(_unique), Field(min_length=1)]
    embedded_sim_fee_free: StrictBool  # R21
    identity_verification_required: StrictBool  # R25
    # R7: remote services need the account's security code here (for the models that have it).
    security_code_required: StrictBool
    services: Annotated[tuple[ServiceId, ...], AfterValidator(_unique)]  # R12
    support_contact: Email | None  # R30; None: the dealer (fallback only)
    is_fallback: StrictBool = False

    def name(self, lang: Literal["en", "de"]) -> str:
        return self.name_en if lang == "en" else self.name_de

    def offers(self, service_id: str) -> bool:
        return service_id in self.services


class FallbackCountry(_Frozen):
    """R30: what applies in a country that is not on the support list (`roaming/fallback.toml`)."""

    name_en: NonEmpty
    name_de: NonEmpty
    embedded_sim_fee_free: StrictBool
    identity_verification_required: StrictBool
    security_code_required: StrictBool  # R7
    services: Annotated[tuple[ServiceId, ...], AfterValidator(_unique)]

    def for_iso(self, iso: str) -> Country:
        # Built without validation: iso may be "" (unknown network) or any unlisted code.
        return Country.model_construct(
            iso=iso,
            name_en=f"{iso} ({self.name_en})" if iso else self.name_en,
            name_de=f"{iso} ({self.name_de})" if iso else self.name_de,
            mccs=(),
            embedded_sim_fee_free=self.embedded_sim_fee_free,
            identity_verification_required=self.identity_verification_required,
            security_code_required=self.security_code_required,
            services=self.services,
            support_contact=None,
            is_fallback=True,
        )


RadioKey = Literal["2g", "3g", "4g", "5g", "wifi"]
Seconds = Annotated[float, Strict(), Field(ge=0.0, le=900.0)]


def _frozen_map(value: Mapping[RadioKey, float]) -> Mapping[RadioKey, float]:
    return MappingProxyType(dict(value))


def _empty() -> Mapping[RadioKey, float]:
    return MappingProxyType({})


GraceByRadio = Annotated[Mapping[RadioKey, Seconds], AfterValidator(_frozen_map)]


class PresenceGrace(_Frozen):
    """R20: how long a silent car stays online, by bearer and radio (`roaming/presence.toml`)."""

    default_s: Seconds
    embedded_sim: GraceByRadio = Field(default_factory=_empty)
    inserted_sim: GraceByRadio = Field(default_factory=_empty)
    wifi_hotspot: GraceByRadio = Field(default_factory=_empty)

    def by_radio(self, bearer: Bearer) -> Mapping[RadioKey, float]:
        match bearer:
            case Bearer.EMBEDDED_SIM:
                return self.embedded_sim
            case Bearer.INSERTED_SIM:
                return self.inserted_sim
            case Bearer.WIFI_HOTSPOT:
                return self.wifi_hotspot
            case Bearer.UNSPECIFIED:
                return _empty()
            case _:
                assert_never(bearer)
