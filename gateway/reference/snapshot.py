"""The immutable, validated view of all reference data that rules read from."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

from gateway.reference.schema import (
    Country,
    FallbackCountry,
    PresenceGrace,
    Product,
    Service,
    SimProfile,
)

__all__ = ["ReferenceData"]


@dataclass(frozen=True, slots=True)
class ReferenceData:
    """One consistent snapshot; build it with `load_reference`, never mutate it."""

    profiles: tuple[SimProfile, ...]
    countries: Mapping[str, Country]  # by ISO 3166-1 alpha-2, upper case
    services: Mapping[str, Service]  # by id, in catalogue order
    fallback: FallbackCountry  # R30: any country not on the support list
    presence: PresenceGrace  # R20
    products: Mapping[str, Product]  # what Grant may sell, by id, in catalogue order
    digest: str  # sha256 over every file read; equal digests mean equal data
    _by_mcc: Mapping[int, Country]

    @classmethod
    def build(
        cls,
        *,
        profiles: Iterable[SimProfile],
        countries: Iterable[Country],
        services: Iterable[Service],
        fallback: FallbackCountry,
        presence: PresenceGrace,
        products: Iterable[Product],
        digest: str,
    ) -> ReferenceData:
        """Index already cross-checked data (the loader guarantees unique ISO codes and MCCs).

        profiles: every SIM profile. countries: every listed country. services: the catalogue.
        fallback: R30 defaults. presence: R20 grace table. digest: identity of the source files.
        products: the product catalogue (cross-checked against services and profiles).
        """
        by_iso = {c.iso: c for c in countries}
        return cls(
            profiles=tuple(profiles),
            countries=MappingProxyType(by_iso),
            services=MappingProxyType({s.id: s for s in services}),
            fallback=fallback,
            presence=presence,
            products=MappingProxyType({p.id: p for p in products}),
            digest=digest,
            _by_mcc=MappingProxyType({mcc: c for c in by_iso.values() for mcc in c.mccs}),
        )

    def profile_for(self, model: str, model_year: int) -> SimProfile | None:
        """The profile of a model family (case-insensitive) covering `model_year`, if any."""
        wanted = model.strip().casefold()
        for profile in self.profiles:
            if profile.model.casefold() == wanted and profile.covers(model_year):
                return profile
        return None

    def country(self, iso: str) -> Country:
        """The listed country, or the R30 fallback (reduced services, dealer as contact)."""
        code = iso.strip().upper()
        listed = self.countries.get(code)
        return listed if listed is not None else self.fallback.for_iso(code)

    def country_for_mcc(self, mcc: int) -> Country | None:
        """The listed country owning a mobile country code; None when no listed country has it."""
        return self._by_mcc.get(mcc)

    def service(self, service_id: str) -> Service | None:
        return self.services.get(service_id)

    def product(self, product_id: str) -> Product | None:
        return self.products.get(product_id)

    def service_of_product(self, product_id: str) -> Service | None:
        """The service a product is delivered as (R12, R22): the product's `service`, or the
        service of the same id for an id the catalogue does not list."""
        product = self.products.get(product_id)
        if product is not None:
            return self.services.get(product.service) if product.service is not None else None
        return self.services.get(product_id)

    def summary(self) -> str:
        return (
            f"{len(self.profiles)} sim profiles, {len(self.countries)} countries, "
            f"{len(self.services)} services, {len(self.products)} products, "
            f"digest {self.digest[:12]}"
        )
