"""Test-only fault injection: a crash at an exact point of the ingest path. Off by default.

`GATEWAY_TEST_KILL=<point>:<n>` makes the gateway process SIGKILL itself, with no clean-up, at
`point` once `n` items have passed it in total:

- `before_ack`: the batch was committed (snapshots, events, and the entitlement engine's ledger
  before them) and is about to be acknowledged to the broker; items are uplink messages.
- `after_entitlements`: the entitlement engine has committed the batch's vehicle updates, the
  session store has not; items are the updates handed to the engine.

Why it exists: the crash tests must prove that a kill in these windows loses nothing (the broker
still holds the unacknowledged messages and redelivers them) and applies nothing twice (the replay
window drops what the store already has; the engine's handling is idempotent). A SIGKILL sent from
outside lands in such a window of a few microseconds only by chance; this puts it there every time.

Never set it in production: it exists for tests/integration/test_crash_recovery.py and
test_entitlements_crash.py. Unset (the default) it costs nothing: the wrappers are not installed.
"""

from __future__ import annotations

import logging
import os
import signal
from collections.abc import Callable, Mapping

log = logging.getLogger(__name__)

ENV = "GATEWAY_TEST_KILL"
POINTS = ("before_ack", "after_entitlements")


class FaultConfigError(ValueError):
    """GATEWAY_TEST_KILL is set but not `<point>:<n>`."""


def kill_point(env: Mapping[str, str] | None = None) -> tuple[str, int] | None:
    """The configured (point, n), or None when fault injection is off."""
    raw = (os.environ if env is None else env).get(ENV, "").strip()
    if not raw:
        return None
    point, _, count = raw.partition(":")
    if point not in POINTS or not count.isdigit() or int(count) < 1:
        raise FaultConfigError(f"{ENV}={raw!r}: expected <point>:<n> with point in {POINTS} and n >= 1")
    return point, int(count)


def killer(point: str, env: Mapping[str, str] | None = None) -> Callable[[int], None] | None:
    """A counter for `point` that kills the process when the configured total is reached; None
    when fault injection is off or aimed at another point."""
    configured = kill_point(env)
    if configured is None or configured[0] != point:
        return None
    limit = configured[1]
    passed = 0

    def count(items: int) -> None:
        nonlocal passed
        passed += items
        if passed >= limit:
            log.critical("%s: SIGKILL at %s after %d items (test-only fault injection)", ENV, point, passed)
            os.kill(os.getpid(), signal.SIGKILL)

    log.warning("%s is set: this process will SIGKILL itself at %s (test-only)", ENV, point)
    return count
