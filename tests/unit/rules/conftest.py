from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from gateway.model import Bearer, Privacy, PrivacyMode, Radio, VehicleSession, VehicleState
from gateway.reference import ReferenceData, load_reference

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="session")
def ref() -> ReferenceData:
    return load_reference(REPO)


def _make_session(**overrides: Any) -> VehicleSession:
    """A 911 MY2020 from Germany at home on its integrated SIM, privacy off, identity verified;
    each test changes only what it is about.
    """
    fields: dict[str, Any] = {
        "vin": "WP0ZZZ99ZLS100001",
        "model": "911",
        "model_year": 2020,
        "home_country": "DE",
        "visited_country": "DE",
        "visited_mcc": 262,
        "bearer": Bearer.EMBEDDED_SIM,
        "radio": Radio.G4,
        "roaming": False,
        "roaming_enabled": False,
        "privacy": Privacy(mode=PrivacyMode.OFF),
        "state": VehicleState(identity_verified=True),
    }
    fields.update(overrides)
    return VehicleSession(**fields)


@pytest.fixture
def make_session() -> Callable[..., VehicleSession]:
    return _make_session
