"""The entitlement engine's hooks into the reference data and the rules (R12, R17-R21, R18).

Kept apart from the engine so that the engine stays testable with plain callables, and apart
from app.py so that the composition root only wires.
"""

from __future__ import annotations

from gateway import rules
from gateway.entitlements.domain.eligibility import default_link_good
from gateway.entitlements.domain.explain import generic_fod_retry_steps
from gateway.entitlements.domain.offer import offered_for_model
from gateway.metrics import Metrics
from gateway.model import VehicleSession
from gateway.reference.store import ReferenceStore

FOD_ACTIVATION = "fod-activation"  # the catalogue's entry for the FoD software activation (bulk)


class ReferenceHooks:
    def __init__(self, *, reference: ReferenceStore, metrics: Metrics) -> None:
        """reference: the current data snapshot (reloads take effect at the next call)."""
        self._reference = reference
        self._metrics = metrics
        self._deferred: set[str] = set()  # VINs whose FoD activation is deferred right now

    def offered(self, session: VehicleSession, product: str) -> tuple[bool, str]:
        """R12: is the product's service offered where the car is? A product whose service the
        reference data does not list is not country-dependent and is not held back."""
        ref = self._reference.current
        service = ref.service_of_product(product)
        if service is None:
            return True, ""
        decision = rules.service_available(rules.visited_country(ref, session), service)
        if rules.withholds_visited_country(session.privacy):
            decision = rules.without_place(decision)  # R22: the reason is logged and explained
        return decision.allowed, decision.detail

    def offered_for_model(self, session: VehicleSession, product: str) -> tuple[bool, str]:
        """Is the product sold for the car's model and model year (roaming/products.toml)?"""
        return offered_for_model(self._reference.current, product, session)

    def fod_retry_steps(self, session: VehicleSession, lang: str) -> tuple[str, ...]:
        """R18: the model's steps from sim_profiles/, generic ones when no profile matches."""
        profile = self._reference.current.profile_for(session.model, session.model_year)
        if profile is None:
            return generic_fod_retry_steps(session, lang)
        return rules.fod_retry_steps(profile, "de" if lang == "de" else "en")

    def link_good(self, session: VehicleSession) -> bool:
        """R17 "good data connection", and R20/R21: the activation download is bulk, so it waits
        while the car is abroad on a bearer that may cost the customer money."""
        if not default_link_good(session):
            return False
        ref = self._reference.current
        profile = ref.profile_for(session.model, session.model_year)
        service = ref.service(FOD_ACTIVATION)
        deferred = False
        if profile is not None and service is not None:
            decision = rules.service_access(profile, rules.visited_country(ref, session), session, service)
            deferred = decision.outcome is rules.Outcome.DEFER
        if deferred and session.vin not in self._deferred:
            self._deferred.add(session.vin)
            self._metrics.bulk_deferrals.inc()  # once per deferral, not per tick
        elif not deferred:
            self._deferred.discard(session.vin)
        return not deferred
