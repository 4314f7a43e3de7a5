"""The liveness schedule: a car is due exactly at its time, once, in (time, vin) order, whatever
whole second its time falls in (the schedule groups cars per second to save memory)."""

from hypothesis import given
from hypothesis import strategies as st

from gateway.session.liveness import LivenessSchedule


def test_a_car_is_due_at_its_time_and_not_a_moment_before() -> None:
    s = LivenessSchedule()
    s.watch("A", 100.25)
    assert not s.due(100.2) and s.pop_due(100.2) == []
    assert s.due(100.25)
    assert s.pop_due(100.25) == ["A"]
    assert not s and not s.due(1e12)


def test_cars_of_one_second_come_out_as_each_one_is_due() -> None:
    s = LivenessSchedule()
    s.watch("B", 7.5)
    s.watch("A", 7.75)
    s.watch("C", 7.1)
    assert s.pop_due(7.5) == ["C", "B"]
    assert not s.due(7.6) and s.due(7.75)
    assert s.pop_due(9.0) == ["A"]


def test_watching_a_scheduled_car_again_changes_nothing() -> None:
    s = LivenessSchedule()
    s.watch("A", 5.0)
    s.watch("A", 1.0)
    assert not s.due(4.9)
    assert s.pop_due(6.0) == ["A"]
    s.watch("A", 1.0)  # popped: it can be watched again
    assert s.pop_due(6.0) == ["A"]


@given(
    st.lists(st.tuples(st.sampled_from("ABCDEFGH"), st.floats(0, 20, allow_nan=False)), max_size=30),
    st.lists(st.floats(0, 25, allow_nan=False), max_size=6),
)
def test_the_schedule_pops_what_a_plain_sorted_list_would(
    watches: list[tuple[str, float]], nows: list[float]
) -> None:
    s = LivenessSchedule()
    expected: dict[str, float] = {}
    for vin, at in watches:
        s.watch(vin, at)
        expected.setdefault(vin, at)
    for now in sorted(nows):
        due = sorted((at, vin) for vin, at in expected.items() if at <= now)
        assert s.due(now) == bool(due)
        assert s.pop_due(now) == [vin for _, vin in due]
        for _, vin in due:
            del expected[vin]
    assert bool(s) == bool(expected)
