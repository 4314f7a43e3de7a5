"""The operator's log of rejected uplink messages: counts by reason, no VINs.

A flood of bad input must neither flood the log nor spread VINs through it: each car's
rejection is a DEBUG line (rate-limited, gateway/pipeline/decode.py); at WARNING one line per
`interval_s` sums them up by reason. The first rejection after a quiet interval is told at
once; later ones are summed until the interval has passed. Time from the injectable clock.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Mapping

from gateway.clock import Clock

log = logging.getLogger("gateway.pipeline")

SUMMARY_INTERVAL_S = 10.0


class RejectionSummary:
    def __init__(self, clock: Clock, interval_s: float = SUMMARY_INTERVAL_S) -> None:
        self._clock = clock
        self._interval_s = interval_s
        self._pending: Counter[str] = Counter()
        self._since: float | None = None  # when the last summary line was written

    def add(self, rejected: Mapping[str, int]) -> None:
        """One batch's rejections by reason (zero counts are ignored)."""
        self._pending.update({reason: n for reason, n in rejected.items() if n})
        if not self._pending:
            return
        now = self._clock.now()
        if self._since is not None and now - self._since < self._interval_s:
            return
        total = sum(self._pending.values())
        reasons = ", ".join(f"{reason}={n}" for reason, n in sorted(self._pending.items()))
        window = "" if self._since is None else f" in the last {now - self._since:.0f} s"
        log.warning(
            "rejected %d uplink messages%s: %s (each car's at DEBUG; gateway_messages_rejected_total)",
            total, window, reasons, extra={"event": "uplink_rejections", "count": total, "reasons": reasons},
        )
        self._pending.clear()
        self._since = now
