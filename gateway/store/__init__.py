"""Durable state: vehicle snapshots and the vehicle event log (the outbox Watch reads)."""

from gateway.store.base import PendingEvent, Store, StoreError

__all__ = ["PendingEvent", "Store", "StoreError"]
