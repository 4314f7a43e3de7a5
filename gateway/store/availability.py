"""Whether the databases can take a write now: the "store" component of /readyz.

Two sources feed it. Real work: the pipeline reports each batch commit's outcome, so readiness
drops with the first failed commit, not a probe interval later. And a probe per database
(`SELECT 1` on PostgreSQL, taking SQLite's write lock and releasing it) every `interval_s`: an
outage without traffic is noticed too, and so is the recovery while the pipeline still waits
out its backoff. A probe that does not answer within `timeout_s` has failed: a database that
hangs is as unusable as one that refuses.

Only the change of state is logged (one line down, one line up), never each failure: an outage
of minutes must not flood the log. Error texts name the database by its display form (the URL
without its password: gateway/redact.py).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping

from gateway.metrics import Metrics

log = logging.getLogger(__name__)

PROBE_INTERVAL_S = 1.0
PROBE_TIMEOUT_S = 2.0

Probe = Callable[[], Awaitable[None]]  # raises when the database cannot take a write


class StoreAvailability:
    def __init__(
        self,
        probes: Mapping[str, Probe],
        metrics: Metrics,
        *,
        interval_s: float = PROBE_INTERVAL_S,
        timeout_s: float = PROBE_TIMEOUT_S,
    ) -> None:
        """probes: per component (store, ledger), a call that raises when it cannot write.
        metrics: gateway_store_up{component} and gateway_store_probe_failures_total."""
        self._probes = dict(probes)
        self._m = metrics
        self._interval_s = interval_s
        self._timeout_s = timeout_s
        self._down: dict[str, str] = {}  # component -> the error that took it down
        for name in self._probes:
            metrics.store_up.labels(name).set(1)

    @property
    def available(self) -> bool:
        return not self._down

    @property
    def down(self) -> dict[str, str]:
        """The components that are down, with the error that took each down."""
        return dict(self._down)

    def report(self, component: str, error: BaseException | None) -> None:
        """The outcome of real work on `component`: None = it succeeded."""
        if error is None:
            if component in self._down:
                del self._down[component]
                self._m.store_up.labels(component).set(1)
                log.warning("%s available again", component)
            return
        if component not in self._down:
            self._m.store_up.labels(component).set(0)
            log.warning("%s unavailable: %s", component, _describe(error))
        self._down[component] = _describe(error)

    async def probe_once(self) -> None:
        """Run every probe (side by side) and record the outcomes."""
        names = list(self._probes)
        outcomes = await asyncio.gather(*(self._probe(self._probes[n]) for n in names))
        for name, error in zip(names, outcomes, strict=True):
            if error is not None:
                self._m.store_probe_failures.labels(name).inc()
            self.report(name, error)

    async def _probe(self, probe: Probe) -> BaseException | None:
        try:
            await asyncio.wait_for(probe(), self._timeout_s)
        except Exception as exc:  # any failure of the database call means "cannot write now"
            return exc
        return None

    async def run(self) -> None:
        """Probe every interval until cancelled."""
        while True:
            await self.probe_once()
            await asyncio.sleep(self._interval_s)


def _describe(error: BaseException) -> str:
    if isinstance(error, TimeoutError):
        return "no answer within the probe timeout"
    return str(error) or type(error).__name__
