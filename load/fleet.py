"""A deterministic fleet: N cars with models, model years, bearers, home countries and VINs.

The same (size, seed) always gives the same fleet, so a benchmark can be repeated against the
same cars. VINs are 17 characters without I, O and Q, unique within a fleet, with a valid
ISO 3779 check digit in position 9.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from gateway._gen.telematics.v1 import common_pb2

EMBEDDED_SIM = common_pb2.BEARER_EMBEDDED_SIM
INSERTED_SIM = common_pb2.BEARER_INSERTED_SIM
WIFI_HOTSPOT = common_pb2.BEARER_WIFI_HOTSPOT


@dataclass(frozen=True, slots=True)
class ModelLine:
    name: str
    first_year: int  # first model year in the fleet (matches sim_profiles/)
    wmi: str  # world manufacturer identifier
    vds: str  # vehicle descriptor section, positions 4-8
    plant: str  # position 11
    weight: int  # relative share of the fleet
    bearers: tuple[int, ...]  # possible data bearers (R19: Taycan embedded SIM only)


MODELS: tuple[ModelLine, ...] = (
    ModelLine("Taycan", 2020, "WP0", "ZZZY1", "S", 22, (EMBEDDED_SIM,)),
    ModelLine("911", 2016, "WP0", "ZZZ99", "S", 18, (EMBEDDED_SIM, INSERTED_SIM, WIFI_HOTSPOT)),
    ModelLine("718", 2017, "WP0", "ZZZ98", "S", 10, (EMBEDDED_SIM, INSERTED_SIM, WIFI_HOTSPOT)),
    ModelLine("Macan", 2016, "WP1", "ZZZ95", "L", 22, (EMBEDDED_SIM, INSERTED_SIM, WIFI_HOTSPOT)),
    ModelLine("Cayenne", 2016, "WP1", "ZZZ9Y", "L", 18, (EMBEDDED_SIM, INSERTED_SIM, WIFI_HOTSPOT)),
    ModelLine("Panamera", 2017, "WP0", "ZZZ97", "L", 10, (EMBEDDED_SIM, INSERTED_SIM, WIFI_HOTSPOT)),
)
LAST_MODEL_YEAR = 2025

# Home markets with their first mobile country code and a weight (share of the fleet), and a
# rough centre used by the simulator for plausible coordinates.
COUNTRIES: dict[str, tuple[int, int, float, float]] = {
    "DE": (262, 30, 50.1, 8.7),
    "AT": (232, 4, 48.2, 16.4),
    "CH": (228, 5, 47.4, 8.5),
    "FR": (208, 6, 48.9, 2.35),
    "IT": (222, 6, 45.5, 9.2),
    "ES": (214, 4, 40.4, -3.7),
    "NL": (204, 3, 52.4, 4.9),
    "BE": (206, 2, 50.8, 4.35),
    "GB": (234, 8, 51.5, -0.1),
    "US": (310, 14, 34.05, -118.25),
    "CA": (302, 3, 43.65, -79.4),
    "AU": (505, 2, -33.9, 151.2),
    "CN": (460, 8, 31.2, 121.5),
    "JP": (440, 3, 35.7, 139.7),
    "PL": (260, 1, 52.2, 21.0),
    "SE": (240, 1, 59.3, 18.1),
}
# Neighbours a car may drive into (border crossings in the simulator).
NEIGHBOURS: dict[str, tuple[str, ...]] = {
    "DE": ("AT", "CH", "FR", "NL", "BE", "PL"),
    "AT": ("DE", "CH", "IT"),
    "CH": ("DE", "AT", "FR", "IT"),
    "FR": ("DE", "CH", "IT", "ES", "BE"),
    "IT": ("FR", "CH", "AT"),
    "ES": ("FR",),
    "NL": ("DE", "BE"),
    "BE": ("NL", "DE", "FR"),
    "GB": ("FR",),
    "US": ("CA",),
    "CA": ("US",),
    "PL": ("DE",),
    "SE": ("DE",),
}

_MODEL_YEAR_CODES = {
    2016: "G", 2017: "H", 2018: "J", 2019: "K", 2020: "L",
    2021: "M", 2022: "N", 2023: "P", 2024: "R", 2025: "S",
}
_TRANSLITERATION = {
    **{str(d): d for d in range(10)},
    **dict(zip("ABCDEFGH", range(1, 9), strict=True)),
    **dict(zip("JKLMN", range(1, 6), strict=True)),
    "P": 7, "R": 9,
    **dict(zip("STUVWXYZ", range(2, 10), strict=True)),
}
_WEIGHTS = (8, 7, 6, 5, 4, 3, 2, 10, 0, 9, 8, 7, 6, 5, 4, 3, 2)


def check_digit(vin: str) -> str:
    """ISO 3779 / FMVSS 565 check digit of a 17-character VIN (position 9 is ignored)."""
    total = sum(_TRANSLITERATION[c] * w for c, w in zip(vin, _WEIGHTS, strict=True))
    rest = total % 11
    return "X" if rest == 10 else str(rest)


def make_vin(model: ModelLine, model_year: int, serial: int) -> str:
    body = f"{model.wmi}{model.vds}0{_MODEL_YEAR_CODES[model_year]}{model.plant}{serial:06d}"
    return body[:8] + check_digit(body) + body[9:]


@dataclass(frozen=True, slots=True)
class Car:
    vin: str
    model: str
    model_year: int
    bearer: int  # telematics.v1.Bearer
    home_country: str  # ISO 3166-1 alpha-2
    home_mcc: int
    software_version: str
    roaming_enabled: bool  # the head unit's roaming switch (R21)


def generate_fleet(size: int, seed: int = 1) -> list[Car]:
    """``size`` distinct cars, the same for the same (size, seed)."""
    if size < 0:
        raise ValueError("fleet size must be >= 0")
    if size > 900_000:
        raise ValueError("at most 900,000 cars (six-digit serials)")
    rng = random.Random(f"fleet:{seed}")
    models = list(MODELS)
    model_weights = [m.weight for m in models]
    countries = list(COUNTRIES)
    country_weights = [COUNTRIES[c][1] for c in countries]
    # Serials: a seeded permutation of a range, so VINs are unique by construction.
    serials = rng.sample(range(100_000, 1_000_000), size)
    cars: list[Car] = []
    for serial in serials:
        model = rng.choices(models, model_weights)[0]
        year = rng.randint(model.first_year, LAST_MODEL_YEAR)
        bearer = model.bearers[0] if len(model.bearers) == 1 else rng.choices(model.bearers, (6, 3, 1))[0]
        home = rng.choices(countries, country_weights)[0]
        software = f"{year % 100}.{rng.randint(0, 9)}.{rng.randint(0, 40)}"
        cars.append(
            Car(
                vin=make_vin(model, year, serial),
                model=model.name,
                model_year=year,
                bearer=bearer,
                home_country=home,
                home_mcc=COUNTRIES[home][0],
                software_version=software,
                roaming_enabled=rng.random() < 0.7,
            )
        )
    return cars


def split(cars: list[Car], parts: int) -> list[list[Car]]:
    """Near-equal contiguous slices (one per worker process)."""
    parts = max(1, parts)
    size, extra = divmod(len(cars), parts)
    out: list[list[Car]] = []
    start = 0
    for i in range(parts):
        end = start + size + (1 if i < extra else 0)
        out.append(cars[start:end])
        start = end
    return out
