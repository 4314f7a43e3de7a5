"""The computations behind load.bench's steady targets and the soak verdict: CPU per message,
the per-repeat target verdicts (both ways), the RSS flatness and its trend, and the text
summary naming each verdict."""

from __future__ import annotations

import math
from typing import Any

import pytest

from load import report
from load.bench import parse_args
from load.stats import flatness, linear_slope, us_per_message
from load.targets import steady_targets, target


def run(system: str, i: int, *, rate: float = 1000.0, cpu: float = 10.0, broker: float = 8.0,
        p99: float = 5.0, p999: float = 20.0) -> dict[str, Any]:
    return {"system": system, "run": i, "complete": True, "messages_per_s": rate, "cpu_us_per_msg": cpu,
            "broker_cpu_us_per_msg": broker, "latency": {"p99_ms": p99, "p999_ms": p999}}


def test_cpu_per_message_is_microseconds_over_the_window_and_nan_when_unknown() -> None:
    assert us_per_message(3.0, 100_000) == pytest.approx(30.0)
    assert math.isnan(us_per_message(math.nan, 100_000))
    assert math.isnan(us_per_message(None, 100_000))
    assert math.isnan(us_per_message(1.0, 0))


def test_a_target_is_judged_by_its_median_and_separately_by_every_run() -> None:
    t = target([0.9, 0.7, 0.85], 0.8, at_most=False)
    assert t["value"]["median"] == 0.85 and t["met"] and not t["met_every_run"]
    t = target([2.0, 1.4, 1.6], 1.5, at_most=True)
    assert t["value"]["median"] == 1.6 and not t["met"] and not t["met_every_run"]
    t = target([1.0, 1.4], 1.5, at_most=True)
    assert t["met"] and t["met_every_run"] and t["comparison"] == "<="


def test_a_target_without_measurements_is_not_met() -> None:
    t = target([], 0.8, at_most=False)
    assert not t["met"] and not t["met_every_run"] and t["value"]["n"] == 0
    assert not target([math.nan], 10.0, at_most=True)["met"]


def test_steady_targets_met_when_the_gateway_keeps_up_with_the_reference_and_the_broker() -> None:
    sat = [run("reference", i, rate=1000) for i in range(3)] + [
        run("gateway", i, rate=900, cpu=10.0, broker=8.0) for i in range(3)]
    half = [run("reference", i, rate=450) for i in range(3)] + [
        run("gateway", i, rate=450, cpu=10.5, broker=8.0, p99=4.0, p999=30.0) for i in range(3)]
    t = steady_targets(sat, half)
    assert set(t) == {"throughput_vs_reference", "cpu_vs_broker_saturation", "cpu_vs_broker_half_load",
                      "cpu_half_vs_saturation", "p99_ms_half_load", "p999_ms_half_load"}
    assert t["throughput_vs_reference"]["value"]["median"] == pytest.approx(0.9)
    assert t["cpu_vs_broker_saturation"]["value"]["median"] == pytest.approx(1.25)
    assert t["cpu_half_vs_saturation"]["value"]["median"] == pytest.approx(1.05)
    assert all(v["met"] and v["met_every_run"] for v in t.values()), t


def test_steady_targets_not_met_by_todays_gateway() -> None:
    """The issue's numbers: 0.16x the reference, 29.7 us/msg against the broker's 4, and a
    gateway whose CPU per message grows and whose tail is long at half load."""
    sat = [run("reference", 0, rate=190_000), run("gateway", 0, rate=31_000, cpu=29.7, broker=4.0)]
    half = [run("reference", 0, rate=15_500),
            run("gateway", 0, rate=15_500, cpu=40.0, broker=5.0, p99=12.0, p999=60.0)]
    t = steady_targets(sat, half)
    assert not any(v["met"] for v in t.values()), t
    assert t["throughput_vs_reference"]["value"]["median"] == pytest.approx(31 / 190, abs=1e-4)
    assert t["cpu_vs_broker_half_load"]["value"]["median"] == pytest.approx(8.0)


def test_targets_pair_each_gateway_run_with_the_reference_of_the_same_repeat() -> None:
    # Drift: repeat 1 ran on a slower machine for both; per-repeat ratios stay 0.9.
    sat = [run("reference", 0, rate=1000), run("gateway", 0, rate=900),
           run("reference", 1, rate=500), run("gateway", 1, rate=450)]
    t = steady_targets(sat, None)["throughput_vs_reference"]
    assert t["value"]["min"] == pytest.approx(0.9) and t["value"]["max"] == pytest.approx(0.9)
    assert "p99_ms_half_load" not in steady_targets(sat, None)


def test_an_incomplete_gateway_run_counts_for_no_target() -> None:
    sat = [run("reference", 0), {**run("gateway", 0, rate=2000), "complete": False}]
    assert not steady_targets(sat, None)["throughput_vs_reference"]["met"]


def test_linear_slope_of_a_line_and_of_too_little_data() -> None:
    assert linear_slope([0, 1, 2, 3], [10, 12, 14, 16]) == pytest.approx(2.0)
    assert linear_slope([0, 1, 2], [5, 5, 5]) == 0
    assert math.isnan(linear_slope([1], [1]))
    assert math.isnan(linear_slope([2, 2], [1, 3]))


def test_rss_flat_after_warm_up_even_when_the_warm_up_grew() -> None:
    wobble = [0, 1000, 1000, 0] * 15  # a palindrome: up and down, no trend
    samples = [(0.0, 50_000.0), (5.0, 80_000.0)] + [(10.0 + t, 100_000.0 + w) for t, w in enumerate(wobble)]
    f = flatness(samples, warmup_s=10.0)
    assert f["samples"] == 60 and f["min_kib"] == 100_000 and f["max_kib"] == 101_000
    assert f["max_deviation_pct"] == pytest.approx(500 / 100_500 * 100, abs=1e-3) and f["flat_within_5pct"]
    assert f["slope_kib_per_min"] == pytest.approx(0.0, abs=1e-6)


def test_rss_growing_steadily_is_not_flat_and_shows_its_trend() -> None:
    samples = [(float(t), 100_000.0 + 200.0 * t) for t in range(0, 600, 5)]  # 12 MiB/min
    f = flatness(samples, warmup_s=60.0)
    assert not f["flat_within_5pct"] and f["max_deviation_pct"] > 5
    assert f["slope_kib_per_min"] == pytest.approx(12_000.0)


def test_rss_with_no_samples_after_warm_up_has_no_verdict() -> None:
    assert flatness([(0.0, 1.0), (1.0, 1.0)], warmup_s=5.0)["flat_within_5pct"] is None


def test_text_summary_names_each_target_and_its_verdict() -> None:
    sat = [run("reference", 0, rate=1000), run("gateway", 0, rate=500)]
    doc = {"scenario": "steady", "params": {"repeat": 1}, "summary": {}, "ratios": {},
           "targets": steady_targets(sat, None)}
    text = report.text_summary(doc)
    assert "throughput_vs_reference: 0.500 [0.500-0.500] >= 0.8: NOT MET" in text
    assert "cpu_vs_broker_saturation: 1.250 [1.250-1.250] <= 1.5: MET" in text


def test_soak_needs_an_explicit_rate_and_half_load_needs_the_gateway() -> None:
    with pytest.raises(SystemExit):
        parse_args(["--scenario", "soak"])
    with pytest.raises(SystemExit):
        parse_args(["--half-load", "--systems", "reference,naive"])
    p, _ = parse_args(["--scenario", "soak", "--rate", "15000"])
    assert (p.rate, p.duration_s, p.cars, p.workers) == (15000.0, 600.0, 1000, 2)
    p, _ = parse_args(["--scenario", "soak", "--rate", "15000", "--smoke"])
    assert p.duration_s <= 12 and p.rate == 500
