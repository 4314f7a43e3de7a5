from gateway.config import PROJECT_ROOT
from gateway.entitlements.engine.reference_hooks import ReferenceHooks
from gateway.metrics import Metrics
from gateway.model import Bearer, Presence, Privacy, PrivacyMode, Radio, VehicleSession, VehicleState

REFERENCE_ROOT = PROJECT_ROOT


def car(bearer: Bearer, visited: str) -> VehicleSession:
    return VehicleSession(
        vin="WP0ZZZ99ZLS800001", model="911", model_year=2020, home_country="DE",
        visited_country=visited, roaming=visited != "DE", roaming_enabled=True, bearer=bearer,
        radio=Radio.G4, presence=Presence.ONLINE, state=VehicleState(identity_verified=True),
    )


def hooks() -> tuple[ReferenceHooks, Metrics]:
    from gateway.reference import ReferenceStore

    metrics = Metrics()
    return ReferenceHooks(reference=ReferenceStore.load(REFERENCE_ROOT), metrics=metrics), metrics


def deferrals(metrics: Metrics) -> float:
    return metrics.registry.get_sample_value("gateway_bulk_deferrals_total") or 0.0


def test_fod_activation_waits_abroad_on_a_paid_bearer_and_is_counted_once() -> None:
    h, metrics = hooks()
    abroad = car(Bearer.INSERTED_SIM, "US")
    assert not h.link_good(abroad)
    assert not h.link_good(abroad)  # still deferred: one deferral, not one per check
    assert deferrals(metrics) == 1.0


def test_fod_activation_flows_at_home_and_on_the_fee_free_embedded_sim() -> None:
    h, metrics = hooks()
    assert h.link_good(car(Bearer.INSERTED_SIM, "DE"))
    assert h.link_good(car(Bearer.EMBEDDED_SIM, "AT"))  # R21: integrated SIM, no roaming fees
    assert deferrals(metrics) == 0.0


def test_unknown_product_is_not_held_back_by_country() -> None:
    h, _ = hooks()
    assert h.offered(car(Bearer.EMBEDDED_SIM, "DE"), "sport-chrono") == (True, "")


def test_retry_steps_come_from_the_models_profile() -> None:
    h, _ = hooks()
    steps = h.fod_retry_steps(car(Bearer.EMBEDDED_SIM, "DE"), "en")
    assert steps and any("10 minutes" in s or "lock" in s.lower() for s in steps)


def test_why_a_service_is_not_offered_names_the_country_only_while_privacy_allows_it() -> None:
    # R22: the detail is logged and explained; the visited country is a coarse location. Brazil
    # is not on the support list: the fallback offers no navigation-plus there (R12, R30).
    h, _ = hooks()
    session = car(Bearer.EMBEDDED_SIM, "BR")
    session.privacy = Privacy(PrivacyMode.OFF)
    ok, detail = h.offered(session, "navigation-plus")
    assert not ok and "BR" in detail
    for mode in (PrivacyMode.ALL_SERVICES, PrivacyMode.UNSPECIFIED):
        session.privacy = Privacy(mode)
        ok, detail = h.offered(session, "navigation-plus")
        assert not ok and "BR" not in detail and "withheld" in detail
