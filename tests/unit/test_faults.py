"""The test-only crash points (gateway/faults.py) are off unless asked for, and strict when asked."""

from __future__ import annotations

import pytest

from gateway import faults


def test_fault_injection_is_off_without_the_variable() -> None:
    assert faults.kill_point({}) is None
    assert faults.killer("before_ack", {}) is None


def test_a_kill_point_is_armed_only_for_its_own_point() -> None:
    env = {faults.ENV: "before_ack:3"}
    assert faults.kill_point(env) == ("before_ack", 3)
    assert faults.killer("after_entitlements", env) is None
    count = faults.killer("before_ack", env)
    assert count is not None
    count(2)  # 2 of 3: the process lives on


@pytest.mark.parametrize("raw", ["before_ack", "before_ack:0", "before_ack:x", "somewhere:1", ":1"])
def test_a_malformed_kill_point_is_refused_with_the_expected_form(raw: str) -> None:
    with pytest.raises(faults.FaultConfigError, match="expected <point>:<n>"):
        faults.kill_point({faults.ENV: raw})
