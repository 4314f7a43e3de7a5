"""What the store may sell for a vehicle: grants checked against the product catalogue
(`roaming/products.toml`, loaded into the reference snapshot).

Pure: the caller passes the snapshot and the vehicle's session (None when it never connected).

- An unknown product is a malformed order (INVALID_ARGUMENT), and so is a kind that does not fit
  the product (a service granted as an FoD term, or the other way round).
- A product not offered for the car's model family and model year is refused
  (FAILED_PRECONDITION) when the gateway knows the model.
- When it does not (a car sold before delivery has never connected, R1), the grant is
  accepted: refusing it would block every new car. The engine checks again once the car's
  Hello has told its model; a product not offered for it then stays undelivered and Explain
  says `not_offered_for_model` (the backend can Revoke it).
"""

from __future__ import annotations

from gateway.entitlements.domain.types import EntitlementError, GrantRequest, InvalidGrant
from gateway.model import VehicleSession
from gateway.reference.snapshot import ReferenceData

__all__ = ["NOT_OFFERED_FOR_MODEL", "ProductNotOffered", "check_grant", "offered_for_model"]

NOT_OFFERED_FOR_MODEL = "not_offered_for_model"


class ProductNotOffered(EntitlementError):
    """The product is not sold for the vehicle's model family and model year."""


def model_known(session: VehicleSession | None) -> bool:
    """Has the car told its model and model year (in a Hello)?"""
    return session is not None and bool(session.model.strip()) and session.model_year > 0


def offered_for_model(
    ref: ReferenceData, product_id: str, session: VehicleSession | None
) -> tuple[bool, str]:
    """(offered, reason) for the car's model. True while the model is unknown, and for a product
    the catalogue no longer lists (it was sold when it did; the catalogue does not take it back)."""
    product = ref.product(product_id)
    if product is None or session is None or not model_known(session):
        return True, ""
    if product.offered(session.model, session.model_year):
        return True, ""
    return False, (
        f"{product.id} is not offered for the {session.model} of model year {session.model_year}"
        f" (offered for {product.offers_label()})"
    )


def check_grant(ref: ReferenceData, request: GrantRequest, session: VehicleSession | None) -> None:
    """Refuse an order the catalogue does not allow. Raises InvalidGrant (unknown product, kind
    that does not fit) or ProductNotOffered (not sold for the car's known model)."""
    product = ref.product(request.product_id)
    if product is None:
        raise InvalidGrant(
            "unknown_product",
            f"order {request.order_id!r}: unknown product_id {request.product_id!r} "
            "(not in the product catalogue)",
        )
    if (product.kind == "fod") != request.kind.is_fod:
        expected = "fod_unlimited or fod_monthly" if product.kind == "fod" else "service or fixed_term"
        raise InvalidGrant(
            "kind_mismatch",
            f"order {request.order_id!r}: {product.id} is a "
            f"{'Function on Demand' if product.kind == 'fod' else 'service'}; kind must be "
            f"{expected}, got {request.kind.value}",
        )
    ok, reason = offered_for_model(ref, product.id, session)
    if not ok:
        raise ProductNotOffered(NOT_OFFERED_FOR_MODEL, f"order {request.order_id!r}: {reason}")
