"""R17 preconditions for an FoD command, the idle wait, and R18 retry timing."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import pytest

from gateway.clock import ManualClock
from gateway.entitlements import (
    BlockerCode,
    EligibilityPolicy,
    IdleTimer,
    RetryPolicy,
    fod_blockers,
    next_retry_at,
)
from gateway.entitlements.domain.eligibility import backoff_s
from gateway.model import (
    ChargingPlug,
    LockState,
    PowerState,
    Presence,
    Privacy,
    PrivacyMode,
    VehicleSession,
    VehicleState,
)

VIN = "WP0ZZZ99ZTS392124"
READY_STATE = VehicleState(
    power=PowerState.OFF, lock=LockState.LOCKED, charging_plug=ChargingPlug.DISCONNECTED
)


def ready_session() -> VehicleSession:
    """Online, privacy off, unplugged, switched off, locked: every R17 precondition met."""
    return VehicleSession(vin=VIN, presence=Presence.ONLINE, state=READY_STATE)


def codes(session: VehicleSession, link_good: bool = True) -> list[BlockerCode]:
    return [b.code for b in fod_blockers(session, link_good)]


# -- fod_blockers ------------------------------------------------------------------------------


def test_no_blockers_when_every_r17_precondition_holds() -> None:
    assert fod_blockers(ready_session(), link_good=True) == []


def test_fod_waits_until_charging_cable_is_unplugged() -> None:
    session = ready_session()
    session.state = replace(READY_STATE, charging_plug=ChargingPlug.CONNECTED)
    assert codes(session) == [BlockerCode.CHARGING_CABLE_CONNECTED]


def test_fod_waits_until_privacy_mode_is_off() -> None:
    session = ready_session()
    session.privacy = Privacy(mode=PrivacyMode.ALL_SERVICES)
    [blocker] = fod_blockers(session, link_good=True)
    assert blocker.code is BlockerCode.PRIVACY_ON
    assert "R17" in blocker.rules


def test_fod_waits_until_the_vehicle_is_switched_off() -> None:
    session = ready_session()
    session.state = replace(READY_STATE, power=PowerState.ON)
    [blocker] = fod_blockers(session, link_good=True)
    assert blocker.code is BlockerCode.POWER_ON
    assert "R18" in blocker.rules  # R18: switch off with the power button


def test_fod_waits_until_the_vehicle_is_locked() -> None:
    session = ready_session()
    session.state = replace(READY_STATE, lock=LockState.UNLOCKED)
    assert codes(session) == [BlockerCode.UNLOCKED]


def test_fod_waits_while_the_vehicle_is_offline() -> None:
    session = ready_session()
    session.presence = Presence.OFFLINE
    assert codes(session, link_good=False) == [BlockerCode.OFFLINE]


def test_fod_waits_for_a_good_data_connection() -> None:
    assert codes(ready_session(), link_good=False) == [BlockerCode.LINK_POOR]


def test_unreported_vehicle_state_counts_as_not_met() -> None:
    session = VehicleSession(vin=VIN, presence=Presence.ONLINE)  # all UNSPECIFIED
    assert codes(session) == [
        BlockerCode.CHARGING_CABLE_CONNECTED,
        BlockerCode.POWER_ON,
        BlockerCode.UNLOCKED,
    ]


def test_every_blocker_is_listed_in_the_order_a_driver_fixes_them() -> None:
    session = VehicleSession(
        vin=VIN,
        presence=Presence.OFFLINE,
        privacy=Privacy(mode=PrivacyMode.ALL_SERVICES),
        state=VehicleState(
            power=PowerState.ON, lock=LockState.UNLOCKED, charging_plug=ChargingPlug.CONNECTED
        ),
    )
    assert codes(session) == [
        BlockerCode.OFFLINE,
        BlockerCode.PRIVACY_ON,
        BlockerCode.CHARGING_CABLE_CONNECTED,
        BlockerCode.POWER_ON,
        BlockerCode.UNLOCKED,
    ]


def test_per_service_privacy_blocks_by_default() -> None:
    session = ready_session()
    session.privacy = Privacy(mode=PrivacyMode.PER_SERVICE, services=frozenset({"location"}))
    assert codes(session) == [BlockerCode.PRIVACY_ON]


def test_per_service_privacy_of_other_services_does_not_block_when_configured() -> None:
    policy = EligibilityPolicy(fod_privacy_service="fod")
    session = ready_session()
    session.privacy = Privacy(mode=PrivacyMode.PER_SERVICE, services=frozenset({"location"}))
    assert fod_blockers(session, True, policy=policy) == []
    session.privacy = Privacy(mode=PrivacyMode.PER_SERVICE, services=frozenset({"fod"}))
    assert [b.code for b in fod_blockers(session, True, policy=policy)] == [BlockerCode.PRIVACY_ON]


# -- IdleTimer ---------------------------------------------------------------------------------


def test_fod_becomes_eligible_after_ten_idle_minutes() -> None:
    clock = ManualClock()
    timer = IdleTimer()
    timer.observe(ready_session(), clock.now())
    clock.advance(599)
    assert not timer.is_eligible(VIN, clock.now())
    clock.advance(1)
    assert timer.is_eligible(VIN, clock.now())


def test_eligible_at_is_none_while_a_precondition_is_not_met() -> None:
    timer = IdleTimer()
    session = ready_session()
    session.state = replace(READY_STATE, lock=LockState.UNLOCKED)
    timer.observe(session, 1000.0)
    assert timer.eligible_at(VIN) is None
    assert not timer.is_eligible(VIN, 10_000.0)


def test_repeated_observations_of_an_unchanged_car_do_not_restart_the_wait() -> None:
    timer = IdleTimer()
    session = ready_session()
    timer.observe(session, 1000.0)
    timer.observe(session, 1300.0)
    assert timer.eligible_at(VIN) == 1600.0


@pytest.mark.parametrize(
    "flip",
    [
        lambda s: setattr(s, "privacy", Privacy(mode=PrivacyMode.ALL_SERVICES)),
        lambda s: setattr(s, "state", replace(READY_STATE, lock=LockState.UNLOCKED)),
        lambda s: setattr(s, "state", replace(READY_STATE, charging_plug=ChargingPlug.CONNECTED)),
        lambda s: setattr(s, "state", replace(READY_STATE, power=PowerState.ON)),
        lambda s: setattr(s, "presence", Presence.OFFLINE),
    ],
    ids=["privacy_on", "unlocked", "plugged_in", "power_on", "offline"],
)
def test_fod_wait_restarts_when_a_precondition_flips(flip: Callable[[VehicleSession], None]) -> None:
    clock = ManualClock()
    timer = IdleTimer()
    session = ready_session()
    timer.observe(session, clock.now())
    clock.advance(500)
    flip(session)
    timer.observe(session, clock.now())
    assert timer.eligible_at(VIN) is None
    clock.advance(30)
    restored = ready_session()
    timer.observe(restored, clock.now())
    assert timer.eligible_at(VIN) == clock.now() + 600


def test_fod_wait_restarts_when_privacy_turns_on() -> None:
    clock = ManualClock()
    timer = IdleTimer()
    session = ready_session()
    timer.observe(session, clock.now())
    clock.advance(590)
    session.privacy = Privacy(mode=PrivacyMode.ALL_SERVICES)
    timer.observe(session, clock.now())
    session.privacy = Privacy()
    timer.observe(session, clock.now())
    clock.advance(20)  # 610 s after the first observation, only 20 s after privacy went off
    assert not timer.is_eligible(VIN, clock.now())


def test_fod_wait_restarts_after_a_reboot_seen_only_in_the_session_epoch() -> None:
    # The car restarted between two observations that both look ready (R18 restart).
    timer = IdleTimer()
    session = ready_session()
    timer.observe(session, 1000.0)
    session.last_boot_at = 1200.0
    timer.observe(session, 1250.0)
    assert timer.eligible_at(VIN) == 1850.0


def test_idle_time_is_configurable() -> None:
    timer = IdleTimer(policy=EligibilityPolicy(idle_s=120))
    timer.observe(ready_session(), 1000.0)
    assert timer.eligible_at(VIN) == 1120.0


def test_blockers_include_the_idle_wait_with_its_end() -> None:
    timer = IdleTimer()
    session = ready_session()
    timer.observe(session, 1000.0)
    [blocker] = timer.blockers(session, 1300.0)
    assert blocker.code is BlockerCode.IDLE_WAIT
    assert blocker.until == 1600.0
    assert timer.blockers(session, 1600.0) == []


def test_blockers_list_unmet_preconditions_before_any_idle_wait() -> None:
    timer = IdleTimer()
    session = ready_session()
    session.state = replace(READY_STATE, lock=LockState.UNLOCKED)
    timer.observe(session, 1000.0)
    assert [b.code for b in timer.blockers(session, 5000.0)] == [BlockerCode.UNLOCKED]


def test_forget_drops_the_wait_of_a_vehicle() -> None:
    timer = IdleTimer()
    timer.observe(ready_session(), 1000.0)
    timer.forget(VIN)
    assert timer.eligible_at(VIN) is None


# -- R18 retries -------------------------------------------------------------------------------


def test_backoff_starts_at_one_minute_and_doubles() -> None:
    assert [backoff_s(n) for n in range(5)] == [0.0, 60.0, 120.0, 240.0, 480.0]


def test_backoff_is_capped_at_six_hours() -> None:
    assert backoff_s(9) == 60 * 2**8  # 4 h 16 min, still under the cap
    assert backoff_s(10) == 6 * 3600
    assert backoff_s(10_000) == 6 * 3600


def test_retry_waits_for_the_backoff_when_the_window_is_already_open() -> None:
    assert next_retry_at(2, 1000.0, eligible_at=900.0) == 1120.0


def test_retry_waits_for_the_next_eligible_window_after_the_backoff() -> None:
    assert next_retry_at(1, 1000.0, eligible_at=5000.0) == 5000.0


def test_retry_without_a_known_window_is_not_before_the_backoff() -> None:
    assert next_retry_at(3, 1000.0) == 1240.0


def test_retry_policy_is_configurable() -> None:
    policy = RetryPolicy(base_s=10, max_s=25)
    assert next_retry_at(3, 0.0, policy=policy) == 25.0
