"""Read `sim_profiles/` and `roaming/` (with the product catalogue) from disk into one
validated `ReferenceData`.

Every problem found is collected (not just the first), each naming the file relative to the
data root, the field path or TOML line, and the reason, e.g.
`roaming/countries/de.toml: support_contact: value is not a valid email`.
"""

from __future__ import annotations

import hashlib
import re
import tomllib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from gateway.reference.schema import (
    Country,
    FallbackCountry,
    ModelOffer,
    PresenceGrace,
    ProductCatalogue,
    ServiceCatalogue,
    SimProfile,
)
from gateway.reference.snapshot import ReferenceData

__all__ = ["Problem", "ReferenceDataError", "load_reference"]

SIM_PROFILES_DIR = "sim_profiles"
COUNTRIES_DIR = "roaming/countries"
SERVICES_FILE = "roaming/services.toml"
FALLBACK_FILE = "roaming/fallback.toml"
PRESENCE_FILE = "roaming/presence.toml"
PRODUCTS_FILE = "roaming/products.toml"

_TOML_POSITION = re.compile(r"^(?P<msg>.*?) \(at line (?P<line>\d+), column (?P<col>\d+)\)$")

_M = TypeVar("_M", bound=BaseModel)


@dataclass(frozen=True, slots=True)
class Problem:
    """One defect in the reference data."""

    file: str  # relative to the data root, '/'-separated
    where: str  # field path ("menus.roaming.en", "services[2]"), "line 3, column 5", or ""
    reason: str

    def __str__(self) -> str:
        if self.where:
            return f"{self.file}: {self.where}: {self.reason}"
        return f"{self.file}: {self.reason}"


class ReferenceDataError(Exception):
    """The reference data cannot be used; `problems` lists every defect found."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems: tuple[Problem, ...] = tuple(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


def load_reference(root: Path) -> ReferenceData:
    """Load and cross-check the data below `root` (the directory holding both data folders).

    Raises ReferenceDataError naming every bad file, field or line.
    """
    loader = _Loader(root)
    profiles = loader.load_dir(SIM_PROFILES_DIR, SimProfile)
    catalogue = loader.load_file(SERVICES_FILE, ServiceCatalogue)
    countries = loader.load_dir(COUNTRIES_DIR, Country)
    fallback = loader.load_file(FALLBACK_FILE, FallbackCountry)
    presence = loader.load_file(PRESENCE_FILE, _PresenceFile)
    products = loader.load_file(PRODUCTS_FILE, ProductCatalogue)

    loader.check_year_ranges(profiles)
    loader.check_countries(countries)
    if catalogue is not None:
        known = set(catalogue.services)
        for rel, country in countries:
            loader.check_service_ids(rel, country.services, known)
        if fallback is not None:
            loader.check_service_ids(FALLBACK_FILE, fallback.services, known)
    if products is not None:
        # Cross-check only against files that loaded cleanly: a broken profile would otherwise
        # also be reported as an "unknown model family" of every product offered for it.
        profiles_ok = not loader.problems_in(SIM_PROFILES_DIR + "/")
        loader.check_products(
            products,
            set(catalogue.services) if catalogue is not None else None,
            profiles if profiles_ok else None,
        )

    if loader.problems:
        raise ReferenceDataError(loader.problems)
    assert catalogue is not None and fallback is not None and presence is not None
    assert products is not None
    return ReferenceData.build(
        profiles=[profile for _, profile in profiles],
        countries=[country for _, country in countries],
        services=list(catalogue.services.values()),
        fallback=fallback,
        presence=presence.presence,
        products=list(products.products.values()),
        digest=loader.digest.hexdigest(),
    )


class _PresenceFile(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    presence: PresenceGrace


class _Loader:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.problems: list[Problem] = []
        self.digest = hashlib.sha256()

    def load_dir(self, rel_dir: str, model: type[_M]) -> list[tuple[str, _M]]:
        directory = self.root / rel_dir
        try:
            paths = sorted(p for p in directory.iterdir() if p.suffix == ".toml")
        except OSError as exc:
            self.problems.append(Problem(rel_dir, "", f"cannot list directory: {exc.strerror}"))
            return []
        if not paths:
            self.problems.append(Problem(rel_dir, "", "no .toml files"))
        loaded = []
        for path in paths:
            rel = f"{rel_dir}/{path.name}"
            item = self.load_file(rel, model)
            if item is not None:
                loaded.append((rel, item))
        return loaded

    def load_file(self, rel: str, model: type[_M]) -> _M | None:
        try:
            raw = (self.root / rel).read_bytes()
        except OSError as exc:
            self.problems.append(Problem(rel, "", f"cannot read file: {exc.strerror}"))
            return None
        self.digest.update(rel.encode() + b"\0" + raw + b"\0")
        try:
            data = tomllib.loads(raw.decode("utf-8"))
        except UnicodeDecodeError as exc:
            self.problems.append(Problem(rel, "", f"not UTF-8: {exc.reason}"))
            return None
        except tomllib.TOMLDecodeError as exc:
            self.problems.append(_toml_problem(rel, exc))
            return None
        try:
            return model.model_validate(data)
        except ValidationError as exc:
            self.problems.extend(_validation_problems(rel, exc))
            return None

    def check_year_ranges(self, profiles: Iterable[tuple[str, SimProfile]]) -> None:
        # One car must map to exactly one profile: no two ranges of a model may share a year.
        seen: list[tuple[str, SimProfile]] = []
        for rel, profile in profiles:
            for other_rel, other in seen:
                if other.model.casefold() == profile.model.casefold() and _overlap(other, profile):
                    self.problems.append(Problem(
                        rel,
                        "model_year_from",
                        f"{profile.model} {profile.years_label()} overlaps {other_rel} "
                        f"({other.years_label()})",
                    ))
            seen.append((rel, profile))

    def check_countries(self, countries: Iterable[tuple[str, Country]]) -> None:
        iso_owner: dict[str, str] = {}
        mcc_owner: dict[int, str] = {}
        for rel, country in countries:
            if country.iso in iso_owner:
                self.problems.append(Problem(
                    rel, "iso", f"{country.iso!r} is also used by {iso_owner[country.iso]}"
                ))
            else:
                iso_owner[country.iso] = rel
                expected = f"{country.iso.lower()}.toml"
                if not rel.endswith("/" + expected):
                    self.problems.append(Problem(
                        rel, "iso", f"{country.iso!r} does not match the file name ({expected})"
                    ))
            for index, mcc in enumerate(country.mccs):
                if mcc in mcc_owner:
                    self.problems.append(Problem(
                        rel, f"mccs[{index}]", f"{mcc} is also listed by {mcc_owner[mcc]}"
                    ))
                else:
                    mcc_owner[mcc] = rel

    def check_service_ids(self, rel: str, ids: Sequence[str], known: set[str]) -> None:
        # R12: a country may only offer services the catalogue defines.
        for index, service_id in enumerate(ids):
            if service_id not in known:
                self.problems.append(Problem(
                    rel,
                    f"services[{index}]",
                    f"unknown service id {service_id!r} (not in {SERVICES_FILE})",
                ))

    def check_products(
        self,
        catalogue: ProductCatalogue,
        services: set[str] | None,
        profiles: Sequence[tuple[str, SimProfile]] | None,
    ) -> None:
        """Each service product names a service of services.toml (R12, R22 follow it), and each
        offer names a model family of sim_profiles/ over years some profile of it covers."""
        for key, product in catalogue.products.items():
            where = f"products.{key}"
            if product.service is not None and services is not None and product.service not in services:
                self.problems.append(Problem(
                    PRODUCTS_FILE,
                    f"{where}.service",
                    f"unknown service id {product.service!r} (not in {SERVICES_FILE})",
                ))
            for index, offer in enumerate(product.offered_for):
                if profiles is not None:
                    self._check_offer(f"{where}.offered_for[{index}]", offer, profiles)

    def problems_in(self, prefix: str) -> bool:
        return any(p.file.startswith(prefix) for p in self.problems)

    def _check_offer(
        self, where: str, offer: ModelOffer, profiles: Sequence[tuple[str, SimProfile]]
    ) -> None:
        family = [p for _, p in profiles if p.model == offer.model]
        if not family:
            models = sorted({p.model for _, p in profiles})
            self.problems.append(Problem(
                PRODUCTS_FILE,
                f"{where}.model",
                f"unknown model family {offer.model!r} (sim_profiles/ has {', '.join(models)})",
            ))
            return
        upper = offer.model_year_to if offer.model_year_to is not None else 10_000
        if not any(
            p.model_year_from <= upper
            and offer.model_year_from <= (p.model_year_to if p.model_year_to is not None else 10_000)
            for p in family
        ):
            self.problems.append(Problem(
                PRODUCTS_FILE,
                f"{where}.model_year_from",
                f"{offer.label()} is covered by no sim profile of the {offer.model}",
            ))


def _overlap(a: SimProfile, b: SimProfile) -> bool:
    a_to = a.model_year_to if a.model_year_to is not None else 10_000
    b_to = b.model_year_to if b.model_year_to is not None else 10_000
    return a.model_year_from <= b_to and b.model_year_from <= a_to


def _toml_problem(rel: str, exc: tomllib.TOMLDecodeError) -> Problem:
    # Python 3.11's TOMLDecodeError has no lineno attribute; the position ends the message.
    match = _TOML_POSITION.match(str(exc))
    if match is None:
        return Problem(rel, "", f"TOML syntax error: {exc}")
    return Problem(
        rel,
        f"line {match['line']}, column {match['col']}",
        f"TOML syntax error: {match['msg']}",
    )


def _validation_problems(rel: str, exc: ValidationError) -> list[Problem]:
    problems = []
    for error in exc.errors():
        if error["type"] == "value_error":
            reason = str(error["ctx"]["error"])
        else:
            reason = error["msg"]
            reason = reason[:1].lower() + reason[1:]
        if error["type"] == "extra_forbidden":
            reason = "unknown field"
        problems.append(Problem(rel, _field_path(error["loc"]), reason))
    return problems


def _field_path(loc: tuple[Any, ...]) -> str:
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif part == "[key]":
            path += " (key)"
        else:
            path += f".{part}" if path else str(part)
    return path
