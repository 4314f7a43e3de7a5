"""The fleet simulator drives every entitlement lifecycle end to end against a real gateway
subprocess and checks the outcome through the gateway's gRPC APIs (load/sim.py, load/sim_checks.py).

The run takes about 75 s: an FoD whose first unlock fails is retried after the gateway's R18
backoff, 60 s of wall time that no GATEWAY_* setting shortens.
"""

from __future__ import annotations

import pytest

from gateway._gen.telematics.v1 import common_pb2, telemetry_pb2
from load.sim import SimOptions, plan_fleet, with_gateway
from load.sim_checks import CarRecord, CheckResult, Sent, _check_privacy

pytestmark = pytest.mark.integration

OPTS = SimOptions(cars=14, hours=4.0, speed=1440.0, seed=7, fod_failure_rate=0.25, fod_idle_s=2.0,
                  settle_timeout_s=120.0, check=True)


@pytest.mark.timeout(240)
def test_a_small_accelerated_fleet_drives_every_lifecycle_and_the_outcome_checks_pass() -> None:
    _, planned, _ = plan_fleet(OPTS)
    services = sum(not g.is_fod for rec in planned for g in rec.grants)
    fods = sum(g.is_fod for rec in planned for g in rec.grants)
    failing = sum(g.is_fod and g.fails_first for rec in planned for g in rec.grants)
    assert services > 0 and fods > 0 and failing > 0  # the plan covers every path

    run, metrics = with_gateway(OPTS)
    r = run.result
    assert r is not None
    assert r.mismatches == [] and r.ok, "\n".join(r.mismatches)
    assert run.stats.errors == []
    # The counts come from the gateway's answers; each equals what the simulator granted.
    assert r.services_granted == r.services_active == services
    assert r.fods_granted == r.fods_unlocked == fods
    assert r.billable_events == fods and r.billable_on_services == 0
    assert r.fod_failures_answered == r.failed_events == failing
    assert metrics["billable_metric"] == fods
    assert run.stats.events["restart_online"] == OPTS.cars
    # R22: some records were sent under privacy and every one of them came out withheld.
    assert r.records_withheld_expected > 0 and r.records_withheld_seen == r.records_withheld_expected
    assert r.records_checked > r.records_withheld_expected
    assert r.presence_matched == OPTS.cars
    assert r.presence_expected_online > 0 and r.presence_expected_offline > 0
    assert r.explained == OPTS.cars and r.roaming_cars == r.roaming_menu_named == 1
    assert metrics["log_problems"] == []


def test_the_privacy_check_notices_a_location_that_should_have_been_withheld() -> None:
    rec = CarRecord("WP0ZZZ99ZJS600001", "911", 2018, owner="o@example.com")
    rec.telemetry[1] = Sent("car-finder", common_pb2.PRIVACY_MODE_ALL_SERVICES, (), True)
    rec.telemetry[2] = Sent("car-finder", common_pb2.PRIVACY_MODE_PER_SERVICE, ("navigation-plus",), True)
    leaked = telemetry_pb2.TelemetryRecord(vin=rec.vin, sequence=1, service="car-finder")
    leaked.sample.location.latitude = 48.1
    dropped = telemetry_pb2.TelemetryRecord(vin=rec.vin, sequence=2, service="car-finder",
                                            location_withheld=True)
    r = CheckResult()
    _check_privacy(r, [rec], [leaked, dropped])
    assert len(r.mismatches) == 2
    assert "seq 1" in r.mismatches[0] and "location delivered although" in r.mismatches[0]
    assert "seq 2" in r.mismatches[1] and "withheld although privacy does not cover" in r.mismatches[1]
