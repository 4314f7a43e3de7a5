"""The memory benchmark (load/car_memory.py) drives the per-car state as the pipeline does."""

import json

import pytest

from gateway.model import Presence
from load import car_memory


def test_every_car_is_online_with_its_hello_and_messages_applied() -> None:
    fleet = car_memory.build(300, messages=2, rate=33_000.0)
    sessions = fleet.tracker.sessions
    assert len(sessions) == 300
    assert all(s.presence is Presence.ONLINE and s.model and s.sequence_epoch for s in sessions.values())
    # Hello + 2 messages, each written: the store's version of every car's row is 3.
    assert {fleet.versions.expected(vin) for vin in sessions} == {3}
    assert len(fleet.tracker.liveness.pop_due(float("inf"))) == 300


def test_the_report_gives_bytes_per_car_and_the_top_sites(capsys: pytest.CaptureFixture[str]) -> None:
    assert car_memory.main(["--cars", "200", "--trace", "100", "--top", "3", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["rss"]["cars"] == 200 and out["rss"]["online"] == 200
    assert len(out["trace"]["sites"]) == 3
    assert out["trace"]["by_type_bytes_per_car"]["VehicleSession"] > 0
