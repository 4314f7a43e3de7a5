"""Reference data: SIM profiles per model and model year, countries, services, presence grace.

Loaded from `sim_profiles/` and `roaming/` (see the README in each), validated, and served as
one immutable snapshot that a `ReferenceStore` swaps whole on reload.
"""

from gateway.reference.loader import Problem, ReferenceDataError, load_reference
from gateway.reference.schema import Country, PresenceGrace, Product, Service, SimProfile
from gateway.reference.snapshot import ReferenceData
from gateway.reference.store import ReferenceStore

__all__ = [
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
