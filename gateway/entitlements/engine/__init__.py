"""The entitlement engine: one `EntitlementEngine` that keeps the ledger, the cars and the
backend in step (see `_engine`).

Private helpers, each with one job: `_batch` (what one step writes in one transaction),
`_delivery` (pure delivery decisions: which set, which ack, whether a command is due),
`_live` and `_setbook` (in-memory mirrors of what the ledger committed), `_downlinks`
(publishing to cars). `reference_hooks` adapts the reference data to the engine's hooks.
"""

from gateway.entitlements.engine._engine import EntitlementEngine, NotFound
from gateway.entitlements.vehicle import VehicleUpdate

__all__ = ["EntitlementEngine", "NotFound", "VehicleUpdate"]
