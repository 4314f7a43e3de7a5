"""R17 is decided by one callable, `fod_window`: the engine sends an FoD command exactly when it
says eligible, and Explain shows exactly its blockers, so the two never disagree."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import replace

import pytest
from engine_harness import VIN, Bench

from gateway.clock import ManualClock
from gateway.entitlements import (
    Blocker,
    BlockerCode,
    EligibilityPolicy,
    EntitlementKind,
    FodWindow,
    IdleTimer,
    fod_window,
)
from gateway.entitlements.domain import eligibility
from gateway.entitlements.domain.explain import fod_blocker
from gateway.model import (
    ChargingPlug,
    LockState,
    PowerState,
    Presence,
    Privacy,
    PrivacyMode,
    Radio,
    VehicleSession,
    VehicleState,
)

FOD = EntitlementKind.FOD_UNLIMITED
MINUTE = 60.0
READY = VehicleState(power=PowerState.OFF, lock=LockState.LOCKED, charging_plug=ChargingPlug.DISCONNECTED)
B = BlockerCode
PLUGGED_IN = replace(READY, charging_plug=ChargingPlug.CONNECTED)


def ready() -> VehicleSession:
    return VehicleSession(vin=VIN, presence=Presence.ONLINE, state=READY)


def ready_but(state: VehicleState) -> VehicleSession:
    return replace(ready(), state=state)


def codes(window: FodWindow) -> list[BlockerCode]:
    return [b.code for b in window.blockers]


# -- the function ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("session", "link_good", "wait_since", "expected", "eligible_at", "idle_left_s"),
    [
        (ready(), True, 0.0, [], 600.0, None),
        (ready(), True, 700.0, [B.IDLE_WAIT], 1300.0, 300.0),
        (ready(), True, None, [B.IDLE_WAIT], None, 600.0),
        (ready(), False, 0.0, [B.LINK_POOR], None, None),
        (replace(ready(), presence=Presence.OFFLINE), False, 0.0, [B.OFFLINE], None, None),
        (replace(ready(), privacy=Privacy(PrivacyMode.ALL_SERVICES)), True, 0.0, [B.PRIVACY_ON], None, None),
        (ready_but(replace(READY, lock=LockState.UNLOCKED)), True, 0.0, [B.UNLOCKED], None, None),
        (ready_but(replace(READY, power=PowerState.ON)), True, 0.0, [B.POWER_ON], None, None),
        (ready_but(PLUGGED_IN), True, 0.0, [B.CHARGING_CABLE_CONNECTED], None, None),
        (None, False, None, [B.NEVER_CONNECTED], None, None),
    ],
    ids=[
        "waited", "waiting", "wait_not_begun", "poor_link", "offline", "privacy_on", "unlocked",
        "power_on", "plugged_in", "never_connected",
    ],
)  # fmt: skip
def test_fod_window_decides_r17_for_a_car_state(
    session: VehicleSession | None,
    link_good: bool,
    wait_since: float | None,
    expected: list[BlockerCode],
    eligible_at: float | None,
    idle_left_s: float | None,
) -> None:
    window = fod_window(session, 1000.0, link_good=link_good, wait_since=wait_since)
    assert codes(window) == expected
    assert window.eligible == (expected == [])
    assert window.eligible_at == eligible_at
    assert window.idle_left_s == idle_left_s


def test_fod_window_idle_wait_follows_the_policy() -> None:
    policy = EligibilityPolicy(idle_s=120)
    window = fod_window(ready(), 1000.0, link_good=True, wait_since=990.0, policy=policy)
    assert codes(window) == [B.IDLE_WAIT] and window.eligible_at == 1110.0 and window.idle_left_s == 110.0


def test_idle_timer_observe_returns_the_window_it_recorded() -> None:
    timer = IdleTimer()
    assert timer.observe(ready(), 1000.0) == fod_window(ready(), 1000.0, link_good=True, wait_since=1000.0)
    assert timer.observe(ready(), 1600.0).eligible


def test_idle_timer_window_records_nothing() -> None:
    timer = IdleTimer()
    assert codes(timer.window(VIN, ready(), 1000.0)) == [B.IDLE_WAIT]
    assert timer.eligible_at(VIN) is None  # only `observe` starts the wait


# -- both callers ------------------------------------------------------------------------------

Setup = Callable[[Bench], Awaitable[None]]


async def _parked(bench: Bench) -> None:
    await bench.park()


async def _plugged(bench: Bench) -> None:
    await bench.park()
    await bench.set_state(charging_plug=ChargingPlug.CONNECTED)


async def _switched_on(bench: Bench) -> None:
    await bench.park()
    await bench.set_state(power=PowerState.ON)


async def _unlocked(bench: Bench) -> None:
    await bench.park()
    await bench.set_state(lock=LockState.UNLOCKED)


async def _privacy_on(bench: Bench) -> None:
    await bench.park()
    await bench.privacy(True)


async def _offline(bench: Bench) -> None:
    await bench.park()
    await bench.go_offline()


async def _on_2g(bench: Bench) -> None:
    await bench.park()
    bench.car().radio = Radio.G2
    await bench.send()


async def _never_connected(bench: Bench) -> None:
    return None


@pytest.mark.parametrize(
    ("setup", "idle_minutes", "expected"),
    [
        (_parked, 11, []),
        (_parked, 5, ["idle_wait"]),
        (_plugged, 11, ["charging_cable_connected"]),
        (_switched_on, 11, ["power_on"]),
        (_unlocked, 11, ["unlocked"]),
        (_privacy_on, 11, ["privacy_on"]),
        (_offline, 11, ["offline"]),
        (_on_2g, 11, ["link_poor"]),
        (_never_connected, 11, ["never_connected"]),
    ],
    ids=["waited", "waiting", "plugged_in", "switched_on", "unlocked", "privacy_on", "offline", "on_2g",
         "never_connected"],
)  # fmt: skip
async def test_engine_sends_the_fod_command_exactly_when_explain_shows_no_r17_blocker(
    bench: Bench, clock: ManualClock, setup: Setup, idle_minutes: int, expected: list[str]
) -> None:
    await bench.grant(FOD)
    await setup(bench)
    clock.advance(idle_minutes * MINUTE)
    await bench.engine.tick()
    [(_, blockers)] = bench.engine.explain(VIN, "en")
    r17 = [b.code for b in blockers if b.rule == "R17"]
    assert r17 == expected
    assert (len(bench.commands()) == 1) == (r17 == [])


async def test_the_engine_and_explain_both_act_on_fod_window(
    bench: Bench, clock: ManualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A parked car that waited long enough, but the decision says "poor link": neither the
    # engine nor Explain may decide R17 on their own.
    calls: list[str] = []

    def poor_link(session: VehicleSession | None, now: float, **_: object) -> FodWindow:
        calls.append(session.vin if session is not None else "")
        return FodWindow((Blocker(B.LINK_POOR, ("R17",), "stub"),))

    monkeypatch.setattr(eligibility, "fod_window", poor_link)
    await bench.grant(FOD)
    await bench.park()
    clock.advance(30 * MINUTE)
    await bench.engine.tick()
    assert bench.commands() == []
    [(_, blockers)] = bench.engine.explain(VIN, "en")
    assert [b.code for b in blockers] == ["link_poor"]
    assert calls

    # And the other way round: a car that is switched on and unlocked, but the decision says
    # eligible: the command goes out and Explain shows nothing in the way.
    def eligible(session: VehicleSession | None, now: float, **_: object) -> FodWindow:
        return FodWindow((), eligible_at=now)

    monkeypatch.setattr(eligibility, "fod_window", eligible)
    await bench.set_state(power=PowerState.ON, lock=LockState.UNLOCKED)
    await bench.engine.tick()
    assert len(bench.commands()) == 1
    [(_, blockers)] = bench.engine.explain(VIN, "en")
    assert blockers == []


@pytest.mark.parametrize("code", list(BlockerCode))
@pytest.mark.parametrize("lang", ["en", "de"])
def test_explain_has_words_for_every_r17_blocker(code: BlockerCode, lang: str) -> None:
    shown = fod_blocker(Blocker(code, ("R17",), ""), 90.0, lang)
    assert shown.code == code.value and shown.rule == "R17" and shown.next_step
