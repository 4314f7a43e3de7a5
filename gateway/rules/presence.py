"""R20: how long a silent car may stay online before it counts as gone."""

from __future__ import annotations

from gateway.model import Bearer, Radio
from gateway.reference.schema import PresenceGrace, RadioKey

__all__ = ["offline_grace_s"]

_RADIO_KEYS: dict[Radio, RadioKey | None] = {
    Radio.UNSPECIFIED: None,
    Radio.G2: "2g",
    Radio.G3: "3g",
    Radio.G4: "4g",
    Radio.G5: "5g",
    Radio.WIFI: "wifi",
}


def offline_grace_s(grace: PresenceGrace, bearer: Bearer, radio: Radio) -> float:
    """Seconds of silence tolerated for a car on `bearer` and `radio` (R20: on 2G an inserted
    SIM or hotspot drops data for the length of a phone call). Numbers come from
    `roaming/presence.toml`; anything not listed there gets its `default_s`.
    """
    key = _RADIO_KEYS[radio]
    if key is None:
        return grace.default_s
    return grace.by_radio(bearer).get(key, grace.default_s)
