"""When an FoD unlock or cancel may run in the car (R17), and when to retry after a failure
(R18). Pure: facts come from the VehicleSession, time from the caller.

R17: a good data connection, privacy mode off, no charging connection, the car switched off,
left and locked, then about 10 minutes of waiting. The wait restarts whenever any of these
stops holding. `fod_window` is THE decision: the engine sends an FoD command only when it says
eligible, and Explain shows its blockers and its idle time left, so the two cannot disagree.
`fod_blockers` lists the preconditions not met now; `IdleTimer` remembers when each VIN's
wait began and asks `fod_window` for the rest.

Unknown facts (a state the car has not reported yet, UNSPECIFIED) count as not met: the gateway
cannot claim the car is locked before the car said so.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from gateway.model import (
    ChargingPlug,
    LockState,
    PowerState,
    Presence,
    PrivacyMode,
    Radio,
    VehicleSession,
)

DEFAULT_IDLE_S = 600.0  # R17: "about 10 minutes"


class BlockerCode(enum.StrEnum):
    NEVER_CONNECTED = "never_connected"
    OFFLINE = "offline"
    LINK_POOR = "link_poor"
    PRIVACY_ON = "privacy_on"
    CHARGING_CABLE_CONNECTED = "charging_cable_connected"
    POWER_ON = "power_on"
    UNLOCKED = "unlocked"
    IDLE_WAIT = "idle_wait"


@dataclass(frozen=True, slots=True)
class Blocker:
    """One unmet precondition and what the driver can do about it."""

    code: BlockerCode
    rules: tuple[str, ...]
    message: str
    until: float | None = None  # IDLE_WAIT: when the wait is over


@dataclass(frozen=True, slots=True)
class EligibilityPolicy:
    """Tunables for R17.

    idle_s: how long all preconditions must hold before the car runs the command.
    fod_privacy_service: None means any privacy mode other than OFF blocks (strict R17). A
        service name means per-service privacy blocks only when it withholds that service.
    """

    idle_s: float = DEFAULT_IDLE_S
    fod_privacy_service: str | None = None


def is_online(session: VehicleSession) -> bool:
    """R13 "connected to the internet"."""
    return session.presence is Presence.ONLINE


def default_link_good(session: VehicleSession) -> bool:
    """R17 "good data connection": online, and not on 2G, where data stops during a call
    (R20)."""
    return is_online(session) and session.radio is not Radio.G2


def _privacy_blocks(session: VehicleSession, policy: EligibilityPolicy) -> bool:
    privacy = session.privacy
    if privacy.mode is PrivacyMode.OFF:
        return False
    if policy.fod_privacy_service is not None and privacy.mode is PrivacyMode.PER_SERVICE:
        return privacy.withholds(policy.fod_privacy_service)
    return True


def fod_blockers(
    session: VehicleSession,
    link_good: bool,
    *,
    policy: EligibilityPolicy = EligibilityPolicy(),
) -> list[Blocker]:
    """R17 preconditions not met right now, in the order a driver would fix them. The idle
    wait is not included: see `fod_window`."""
    blockers: list[Blocker] = []
    if session.presence is not Presence.ONLINE:
        blockers.append(
            Blocker(BlockerCode.OFFLINE, ("R17",), "the vehicle must be connected to the internet")
        )
    elif not link_good:
        blockers.append(Blocker(BlockerCode.LINK_POOR, ("R17",), "the vehicle needs a good data connection"))
    if _privacy_blocks(session, policy):
        blockers.append(Blocker(BlockerCode.PRIVACY_ON, ("R17", "R22"), "switch privacy mode off"))
    state = session.state
    if state.charging_plug is not ChargingPlug.DISCONNECTED:
        blockers.append(
            Blocker(
                BlockerCode.CHARGING_CABLE_CONNECTED,
                ("R17", "R18"),
                "disconnect the charging cable",
            )
        )
    if state.power is not PowerState.OFF:
        blockers.append(
            Blocker(BlockerCode.POWER_ON, ("R17", "R18"), "switch the vehicle off with the power button")
        )
    if state.lock is not LockState.LOCKED:
        blockers.append(Blocker(BlockerCode.UNLOCKED, ("R17", "R18"), "leave the vehicle and lock it"))
    return blockers


@dataclass(frozen=True, slots=True)
class FodWindow:
    """R17 for one car at one instant: may an FoD command go now, and if not, why not.

    blockers: what stands between the car and the command, in the order a driver fixes them;
        the idle wait comes last and only once every precondition holds. Empty: eligible.
    eligible_at: when the idle wait is (or was) over; None while a precondition is not met or
        the wait has not started.
    idle_left_s: while waiting idle only: how long the wait still runs.
    """

    blockers: tuple[Blocker, ...]
    eligible_at: float | None = None
    idle_left_s: float | None = None

    @property
    def eligible(self) -> bool:
        return not self.blockers


def fod_window(
    session: VehicleSession | None,
    now: float,
    *,
    link_good: bool,
    wait_since: float | None,
    policy: EligibilityPolicy = EligibilityPolicy(),
) -> FodWindow:
    """R17: may an FoD command go to the car `now`? The one decision both the engine (before it
    sends a command) and Explain (what it tells the driver) read.

    session: the car's session; None when it never connected (nothing can be sent to it).
    link_good: R17 "good data connection" as the engine's hook reads it (R20, R21).
    wait_since: when the idle wait began with every precondition holding (`IdleTimer`); None
        when it has not begun: the wait then still lasts the whole `policy.idle_s`.
    """
    if session is None:
        never = Blocker(BlockerCode.NEVER_CONNECTED, ("R17",), "connect the vehicle to the internet")
        return FodWindow((never,))
    blockers = fod_blockers(session, link_good, policy=policy)
    if blockers:
        return FodWindow(tuple(blockers))
    eligible_at = None if wait_since is None else wait_since + policy.idle_s
    if eligible_at is not None and now >= eligible_at:
        return FodWindow((), eligible_at)
    minutes = round(policy.idle_s / 60)
    wait = Blocker(
        BlockerCode.IDLE_WAIT,
        ("R17", "R18"),
        f"leave the vehicle locked and switched off for about {minutes} minutes",
        until=eligible_at,
    )
    left = policy.idle_s if eligible_at is None else eligible_at - now
    return FodWindow((wait,), eligible_at, idle_left_s=left)


@dataclass(frozen=True, slots=True)
class _Wait:
    since: float
    # Changes of these mean the car went offline or restarted in between, even if the next
    # snapshot looks the same (a flip between two observations must restart the wait too).
    epoch: tuple[float, float, int]


def _epoch(session: VehicleSession) -> tuple[float, float, int]:
    return (session.presence_changed_at, session.last_boot_at, session.connection_id)


class IdleTimer:
    """The R17 idle wait for many vehicles. Call `observe` on every state change of a VIN."""

    def __init__(self, *, policy: EligibilityPolicy = EligibilityPolicy()) -> None:
        """policy: the idle time and privacy reading (default 600 s, strict privacy)."""
        self._policy = policy
        self._waits: dict[str, _Wait] = {}

    @property
    def policy(self) -> EligibilityPolicy:
        return self._policy

    def observe(self, session: VehicleSession, now: float, *, link_good: bool = True) -> FodWindow:
        """Start the wait when every precondition holds; restart it when any one flipped.
        Returns the R17 window right after (the engine's decision)."""
        vin = session.vin
        if fod_blockers(session, link_good, policy=self._policy):
            self._waits.pop(vin, None)
        else:
            epoch = _epoch(session)
            wait = self._waits.get(vin)
            if wait is None or wait.epoch != epoch:
                self._waits[vin] = _Wait(since=now, epoch=epoch)
        return self.window(vin, session, now, link_good=link_good)

    def window(
        self, vin: str, session: VehicleSession | None, now: float, *, link_good: bool = True
    ) -> FodWindow:
        """`fod_window` with the wait recorded so far, recording nothing (Explain reads this)."""
        wait = self._waits.get(vin)
        since = None if wait is None else wait.since
        return fod_window(session, now, link_good=link_good, wait_since=since, policy=self._policy)

    def eligible_at(self, vin: str) -> float | None:
        """When the wait will be over; None while a precondition is not met."""
        wait = self._waits.get(vin)
        return None if wait is None else wait.since + self._policy.idle_s

    def is_eligible(self, vin: str, now: float) -> bool:
        """Has the recorded wait run out? (The engine decides by `observe`'s window, which
        also checks the preconditions now.)"""
        at = self.eligible_at(vin)
        return at is not None and now >= at

    def blockers(self, session: VehicleSession, now: float, *, link_good: bool = True) -> list[Blocker]:
        """Everything between the car and an FoD command, the idle wait included."""
        return list(self.window(session.vin, session, now, link_good=link_good).blockers)

    def forget(self, vin: str) -> None:
        self._waits.pop(vin, None)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """R18 backoff after a failed unlock or cancel: base_s, doubling, capped at max_s."""

    base_s: float = 60.0
    max_s: float = 6 * 3600.0


def backoff_s(failures: int, policy: RetryPolicy = RetryPolicy()) -> float:
    """Delay after the `failures`-th consecutive failure (0 failures: no delay)."""
    if failures <= 0:
        return 0.0
    exponent = min(failures - 1, 32)  # bounded: 2**32 minutes is far beyond any cap
    return float(min(policy.base_s * 2**exponent, policy.max_s))


def next_retry_at(
    failures: int,
    now: float,
    *,
    eligible_at: float | None = None,
    policy: RetryPolicy = RetryPolicy(),
) -> float:
    """Earliest time to retry after `failures` consecutive failures (R18): the backoff, and
    not before the next eligible window when one is known (`IdleTimer.eligible_at`). With no
    window known the retry still waits for one; this is only the not-before time."""
    at = now + backoff_s(failures, policy)
    if eligible_at is not None:
        at = max(at, eligible_at)
    return at
