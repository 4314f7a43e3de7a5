"""roaming/products.toml: the product catalogue loads, is cross-checked against services.toml and
sim_profiles/, and a bad entry is refused with its file, field and reason."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from gateway.reference import ReferenceData, ReferenceDataError, ReferenceStore, load_reference

PRODUCTS = "roaming/products.toml"
REPO = Path(__file__).resolve().parents[3]


def _edit(root: Path, old: str, new: str) -> None:
    path = root / PRODUCTS
    text = path.read_text(encoding="utf-8")
    assert old in text, f"{old!r} not in {PRODUCTS}"
    path.write_text(text.replace(old, new, 1), encoding="utf-8")


def _error(root: Path) -> str:
    with pytest.raises(ReferenceDataError) as info:
        load_reference(root)
    return str(info.value)


def test_catalogue_holds_services_and_functions_on_demand(ref: ReferenceData) -> None:
    kinds = {p.id: p.kind for p in ref.products.values()}
    assert kinds["remote-services"] == "service"
    for fod in (
        "adaptive-cruise-control",
        "lane-keeping-assist",
        "porsche-innodrive",
        "active-lane-keeping",
        "power-steering-plus",
        "porsche-dynamic-light-system-plus",
        "porsche-intelligent-range-manager",
        "apple-carplay",
    ):
        assert kinds[fod] == "fod", fod


def test_every_service_product_belongs_to_a_known_service(ref: ReferenceData) -> None:
    for product in ref.products.values():
        if product.kind == "service":
            assert product.service in ref.services, product.id
        else:
            assert product.service is None, product.id


def test_every_offered_model_family_has_a_sim_profile(ref: ReferenceData) -> None:
    models = {p.model for p in ref.profiles}
    for product in ref.products.values():
        for offer in product.offered_for:
            assert offer.model in models, (product.id, offer.model)


def _product_ids_in(paths: list[Path]) -> set[str]:
    found: set[str] = set()
    pattern = re.compile(r'(?:product_id=|"product_id": |_PRODUCT = |grant\("[^"]+", )"([A-Za-z0-9._-]+)"')
    for path in paths:
        found.update(pattern.findall(path.read_text(encoding="utf-8")))
    return found


def test_every_product_id_granted_over_grpc_by_tests_and_the_simulator_is_in_the_catalogue(
    ref: ReferenceData,
) -> None:
    paths = [*(REPO / "tests" / "integration").glob("*.py"), *(REPO / "load").glob("*.py")]
    used = _product_ids_in(paths) - {"no-such-product-xyz"}  # the refusal test's unknown id
    assert used, "the pattern no longer finds any product id"
    assert used <= set(ref.products), sorted(used - set(ref.products))


def test_offer_covers_its_model_years_case_insensitively(ref: ReferenceData) -> None:
    pirm = ref.products["porsche-intelligent-range-manager"]
    assert pirm.offered("Taycan", 2020) and pirm.offered("taycan", 2031)
    assert not pirm.offered("Taycan", 2019)
    assert not pirm.offered("Macan", 2022)
    carplay = ref.products["apple-carplay"]
    assert carplay.offered("911", 2018) and not carplay.offered("911", 2019)


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        (
            'service = "car-finder"',
            'service = "car-teleporter"',
            "roaming/products.toml: products.car-finder.service: unknown service id "
            "'car-teleporter' (not in roaming/services.toml)",
        ),
        (
            '[products.apple-carplay]  # retrofit for head units that did not ship with it (R24: '
            'CarPlay disconnects active Bluetooth)\nkind = "fod"\nname_en = "Apple CarPlay"\n'
            'name_de = "Apple CarPlay"\noffered_for = [\n    { model = "911"',
            '[products.apple-carplay]\nkind = "fod"\nname_en = "Apple CarPlay"\n'
            'name_de = "Apple CarPlay"\noffered_for = [\n    { model = "918 Spyder"',
            "roaming/products.toml: products.apple-carplay.offered_for[0].model: unknown model "
            "family '918 Spyder'",
        ),
        (
            '{ model = "Taycan", model_year_from = 2020 },\n]\n\n[products.apple-carplay]',
            '{ model = "Taycan", model_year_from = 1995, model_year_to = 1999 },\n]\n\n'
            '[products.apple-carplay]',
            "roaming/products.toml: products.porsche-intelligent-range-manager.offered_for[0]."
            "model_year_from: Taycan MY1995-1999 is covered by no sim profile of the Taycan",
        ),
        (
            'kind = "service"\nservice = "radio-plus"',
            'kind = "fod"\nservice = "radio-plus"',
            'roaming/products.toml: products.radio-plus: service must be given exactly when '
            'kind = "service"',
        ),
        (
            'kind = "service"\nservice = "radio-plus"',
            'kind = "subscription"\nservice = "radio-plus"',
            "roaming/products.toml: products.radio-plus.kind: input should be 'service' or 'fod'",
        ),
        (
            "[products.sport-chrono]",
            "[products.Sport_Chrono]",
            "roaming/products.toml: products.Sport_Chrono (key): 'Sport_Chrono' is not a "
            "product id",
        ),
        (
            '[products.sport-chrono]\nkind = "fod"',
            '[products.sport-chrono]\nkind = "fod"\nprice_eur = 1',
            "roaming/products.toml: products.sport-chrono.price_eur: unknown field",
        ),
    ],
)
def test_bad_product_entry_names_file_field_and_reason(
    data_copy: Path, old: str, new: str, expected: str
) -> None:
    _edit(data_copy, old, new)
    assert expected in _error(data_copy)


def test_missing_catalogue_file_is_refused(data_copy: Path) -> None:
    (data_copy / PRODUCTS).unlink()
    assert "roaming/products.toml: cannot read file" in _error(data_copy)


def test_reload_with_a_bad_catalogue_keeps_the_old_snapshot(data_copy: Path) -> None:
    store = ReferenceStore.load(data_copy)
    before = store.current
    _edit(data_copy, 'service = "car-finder"', 'service = "car-teleporter"')
    ok, message = store.reload(data_copy)
    assert not ok and store.current is before
    assert "products.car-finder.service: unknown service id 'car-teleporter'" in message
