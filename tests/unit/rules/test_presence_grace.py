"""R20: a car on 2G over an inserted SIM or hotspot may be silent during a phone call."""

from __future__ import annotations

import pytest

from gateway.model import Bearer, Radio
from gateway.reference import ReferenceData
from gateway.rules import offline_grace_s


@pytest.mark.parametrize(
    ("bearer", "radio", "seconds"),
    [
        (Bearer.INSERTED_SIM, Radio.G2, 120.0),
        (Bearer.WIFI_HOTSPOT, Radio.G2, 120.0),
        (Bearer.INSERTED_SIM, Radio.G4, 60.0),  # LTE: parallel voice depends on the provider
        (Bearer.WIFI_HOTSPOT, Radio.WIFI, 120.0),  # the phone's radio is unknown
        (Bearer.INSERTED_SIM, Radio.G3, 0.0),
        (Bearer.INSERTED_SIM, Radio.G5, 0.0),
        (Bearer.EMBEDDED_SIM, Radio.G2, 0.0),  # data and Bluetooth telephony in parallel
        (Bearer.EMBEDDED_SIM, Radio.G4, 0.0),
        (Bearer.INSERTED_SIM, Radio.UNSPECIFIED, 0.0),
        (Bearer.UNSPECIFIED, Radio.G2, 0.0),
    ],
)
def test_offline_grace_comes_from_presence_data(
    ref: ReferenceData, bearer: Bearer, radio: Radio, seconds: float
) -> None:
    assert offline_grace_s(ref.presence, bearer, radio) == seconds


def test_every_bearer_and_radio_has_a_grace(ref: ReferenceData) -> None:
    for bearer in Bearer:
        for radio in Radio:
            assert offline_grace_s(ref.presence, bearer, radio) >= 0.0
