"""The public surface of gateway.reference stays small and deliberate."""

from __future__ import annotations

import gateway.reference


def test_reference_exports_only_the_documented_names() -> None:
    assert sorted(gateway.reference.__all__) == [
        "Country",
        "PresenceGrace",
        "Problem",
        "Product",
        "ReferenceData",
        "ReferenceDataError",
        "ReferenceStore",
        "Service",
        "SimProfile",
        "load_reference",
    ]
    for name in gateway.reference.__all__:
        assert hasattr(gateway.reference, name)
