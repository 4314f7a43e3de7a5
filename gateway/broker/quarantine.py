"""Carries out the flood quarantine's decisions (gateway/session/quarantine.py): a log line per
car, the metrics, and the order to the managed broker to drop (or let in again) its uplink.

An external broker cannot be told (its ACL is its operator's): the gateway then drops a
quarantined car's messages itself, which keeps them out of its state but not off its
connection; the broker's own per-client rate limit is the defence there (README "Limits").
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Protocol

from gateway.broker.managed import BrokerStartError
from gateway.metrics import Metrics
from gateway.session.quarantine import FloodQuarantine

log = logging.getLogger(__name__)


class UplinkGate(Protocol):
    """A broker that drops the uplink of the given VINs (the set replaces the last one)."""

    def deny_uplinks(self, vins: frozenset[str]) -> None: ...


class QuarantineOrders:
    def __init__(self, quarantine: FloodQuarantine, broker: UplinkGate | None, metrics: Metrics) -> None:
        """broker: the managed broker; None for an external one (the gateway drops alone)."""
        self._quarantine = quarantine
        self._broker = broker
        self._m = metrics
        self._told_external = False

    def changed(self, quarantined: Sequence[str], released: Sequence[str]) -> None:
        q = self._quarantine
        for vin in quarantined:
            log.warning(
                "car %s quarantined for %gs: more than %d messages over its limit within %gs;"
                " its uplink is dropped %s", vin, q.duration_s, q.excess, q.window_s,
                "by the broker" if self._broker is not None else "by the gateway",
            )
        for vin in released:
            log.info("car %s: quarantine over, its uplink is accepted again", vin)
        self._m.car_quarantines.inc(len(quarantined))
        self._m.cars_quarantined.set(len(q))
        if self._broker is None:
            if quarantined and not self._told_external:
                self._told_external = True
                log.warning("the broker is external: it still forwards a quarantined car's messages"
                            " (set a per-client rate limit on the broker, README \"Limits\")")
            return
        try:
            self._broker.deny_uplinks(q.blocked)
        except (OSError, ValueError, BrokerStartError) as exc:
            # The gateway still drops the car's messages itself; only the broker's relief is lost.
            self._m.quarantine_order_failures.inc()
            log.error("could not have the broker drop quarantined uplinks: %s", exc)
