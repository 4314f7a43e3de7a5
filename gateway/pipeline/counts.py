"""What a processed batch counts in the metrics, once per batch (a metric update takes a lock)."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence

from prometheus_client import Counter as Counter_

from gateway.metrics import MESSAGE_KINDS, Metrics
from gateway.model import Bearer, VehicleSession
from gateway.pipeline.batches import Applied
from gateway.session.events import EventKind, SessionEvent
from gateway.session.tracker import SessionTracker

log = logging.getLogger("gateway.pipeline")

_BEARER_LABEL = {
    Bearer.EMBEDDED_SIM: "embedded_sim",
    Bearer.INSERTED_SIM: "inserted_sim",
    Bearer.WIFI_HOTSPOT: "wifi_hotspot",
    Bearer.UNSPECIFIED: "unspecified",
}


class BatchCounts:
    def __init__(self, *, metrics: Metrics, tracker: SessionTracker) -> None:
        self._m = metrics
        self._tracker = tracker
        # Labelled children looked up once (a `labels` call takes a lock and builds a key: a
        # per-batch cost that small batches at a light load paid as often as messages).
        self._received = {k: metrics.messages_received.labels(k) for k in MESSAGE_KINDS}
        self._online = {b: metrics.vehicles_online.labels(label) for b, label in _BEARER_LABEL.items()}
        self._rejected: dict[str, Counter_] = {}
        self._stale: dict[str, Counter_] = {}
        self._decisions: dict[tuple[str, str], Counter_] = {}
        # The gauges as last set: set again only when they change (most batches change none).
        self._last_online: dict[Bearer, int] = {}
        self._last_tracked = -1

    def batch(
        self, n: int, kinds: Counter[str], rejected: Counter[str], stale: Counter[str]
    ) -> None:
        """The batch's messages by kind and outcome, and the sessions it left."""
        self._m.ingress_batch_messages.observe(n)
        for kind, count in kinds.items():
            self._received[kind].inc(count)
        for reason, count in rejected.items():
            child = self._rejected.get(reason)
            if child is None:
                child = self._rejected[reason] = self._m.messages_rejected.labels(reason)
            child.inc(count)
        for outcome, count in stale.items():
            child = self._stale.get(outcome)
            if child is None:
                child = self._stale[outcome] = self._m.messages_stale.labels(outcome)
            child.inc(count)
        self.sessions()

    def sessions(self) -> None:
        """The sessions online by bearer and tracked (after a batch or a tick)."""
        last = self._last_online
        for bearer, count in self._tracker.online_by_bearer.items():
            if last.get(bearer) != count:
                last[bearer] = count
                self._online[bearer].set(count)
        tracked = len(self._tracker.sessions)
        if tracked != self._last_tracked:
            self._last_tracked = tracked
            self._m.vehicles_tracked.set(tracked)

    def applied(self, a: Applied) -> None:
        """The counts of the apply that committed (one that conflicted counts for nothing)."""
        for key, count in a.decisions.items():
            child = self._decisions.get(key)
            if child is None:
                child = self._decisions[key] = self._m.rule_decisions.labels(*key)
            child.inc(count)
        for outcome, count in a.grace.items():
            self._m.presence_grace_started.labels(outcome).inc(count)
        if a.timeouts:
            self._m.presence_timeouts.inc(a.timeouts)
        if a.withheld_records:
            self._m.privacy_withheld_records.inc(a.withheld_records)
        if a.withheld_signals:
            self._m.privacy_withheld_signals.inc(a.withheld_signals)


def log_presence(events: Sequence[tuple[SessionEvent, VehicleSession]]) -> None:
    """Car online/offline at DEBUG (one line per change names the car: never at INFO in bulk)."""
    for event, _ in events:
        if event.kind is EventKind.ONLINE:
            log.debug("car %s online%s", event.vin, " (boot)" if event.boot else "",
                      extra={"event": "car_online", "vin": event.vin})
        elif event.kind is EventKind.OFFLINE:
            log.debug("car %s offline: %s", event.vin, event.offline_reason.name.lower(),
                      extra={"event": "car_offline", "vin": event.vin})
