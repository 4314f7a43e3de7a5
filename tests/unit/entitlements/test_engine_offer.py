"""The product catalogue at Grant and after the car's Hello (gateway/entitlements/domain/offer.py):
unknown products and kinds that do not fit are malformed orders, a product not sold for the
car's known model is refused, and one granted before the model was known stays undelivered
with `not_offered_for_model` once the Hello shows a model it is not sold for."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from engine_harness import VIN, Bench, order

from gateway.clock import ManualClock
from gateway.entitlements import EntitlementKind, InvalidGrant
from gateway.entitlements.domain.offer import ProductNotOffered, check_grant, offered_for_model
from gateway.model import VehicleSession
from gateway.reference import load_reference

REF = load_reference(Path(__file__).resolve().parents[3])
MINUTE = 60.0
PIRM = "porsche-intelligent-range-manager"  # FoD for the Taycan only
VOICE = "voice-pilot"  # service, not for the Macan before MY2019


def _offered(session: VehicleSession, product: str) -> tuple[bool, str]:
    return offered_for_model(REF, product, session)


@pytest.fixture
async def shop(make_bench: Callable[..., Any]) -> Bench:
    b: Bench = await make_bench(offered_for_model=_offered)
    return b


def _with_model(bench: Bench, model: str, year: int) -> None:
    car = bench.car()
    car.model, car.model_year = model, year


def test_unknown_product_is_an_invalid_grant() -> None:
    with pytest.raises(InvalidGrant) as err:
        check_grant(REF, order(product_id="no-such-product-xyz"), None)
    assert err.value.reason == "unknown_product"


@pytest.mark.parametrize(
    ("product", "kind"),
    [
        (PIRM, EntitlementKind.SERVICE),
        (PIRM, EntitlementKind.FIXED_TERM),
        ("remote-services", EntitlementKind.FOD_UNLIMITED),
        ("remote-services", EntitlementKind.FOD_MONTHLY),
    ],
)
def test_kind_that_does_not_fit_the_product_is_an_invalid_grant(product: str, kind: EntitlementKind) -> None:
    with pytest.raises(InvalidGrant) as err:
        check_grant(REF, order(kind, product_id=product), None)
    assert err.value.reason == "kind_mismatch"


def test_product_not_sold_for_the_known_model_is_refused_naming_the_model() -> None:
    macan = VehicleSession(VIN, model="Macan", model_year=2018)
    with pytest.raises(ProductNotOffered) as err:
        check_grant(REF, order(EntitlementKind.FOD_UNLIMITED, product_id=PIRM), macan)
    assert err.value.reason == "not_offered_for_model"
    assert "the Macan of model year 2018" in err.value.message


@pytest.mark.parametrize("session", [None, VehicleSession(VIN), VehicleSession(VIN, model="Macan")])
def test_grant_for_a_car_whose_model_is_unknown_is_accepted(session: VehicleSession | None) -> None:
    check_grant(REF, order(EntitlementKind.FOD_UNLIMITED, product_id=PIRM), session)  # R1: sold early


def test_product_sold_for_the_model_year_passes() -> None:
    taycan = VehicleSession(VIN, model="Taycan", model_year=2024)
    check_grant(REF, order(EntitlementKind.FOD_MONTHLY, product_id=PIRM), taycan)
    macan_2019 = VehicleSession(VIN, model="Macan", model_year=2019)
    check_grant(REF, order(product_id=VOICE), macan_2019)


async def test_service_granted_before_the_model_was_known_stays_pending_after_a_hello_with_another_model(
    shop: Bench,
) -> None:
    eid = await shop.grant(product_id=VOICE)
    _with_model(shop, "Macan", 2017)
    await shop.boot()
    await shop.engine.tick()
    assert shop.sets() == [] and await shop.state(eid) == "pending"
    [(_, blockers)] = shop.engine.explain(VIN, "en")
    assert blockers[0].code == "not_offered_for_model" and blockers[0].rule == "catalogue"
    assert "not offered for the Macan of model year 2017" in blockers[0].next_step
    [(_, german)] = shop.engine.explain(VIN, "de")
    assert "für den Macan des Modelljahrs 2017 nicht angeboten" in german[0].next_step


async def test_fod_granted_before_the_model_was_known_is_never_unlocked_in_a_model_it_is_not_sold_for(
    shop: Bench, clock: ManualClock
) -> None:
    eid = await shop.grant(EntitlementKind.FOD_UNLIMITED, product_id=PIRM)
    _with_model(shop, "Macan", 2020)
    await shop.park()
    clock.advance(30 * MINUTE)
    await shop.engine.tick()
    assert shop.commands() == [] and await shop.state(eid) == "pending"
    [(_, blockers)] = shop.engine.explain(VIN, "en")
    assert [b.code for b in blockers] == ["not_offered_for_model"]  # R17 conditions all met


async def test_fod_sold_for_the_model_is_unlocked_as_usual(shop: Bench, clock: ManualClock) -> None:
    eid = await shop.grant(EntitlementKind.FOD_UNLIMITED, product_id=PIRM)
    _with_model(shop, "Taycan", 2022)
    await shop.park()
    clock.advance(10 * MINUTE)
    await shop.engine.tick()
    [command] = shop.commands()
    assert command.entitlement_id == eid and await shop.state(eid) == "unlock_pending"
    assert all(b.code != "not_offered_for_model" for _, bs in shop.engine.explain(VIN, "en") for b in bs)
