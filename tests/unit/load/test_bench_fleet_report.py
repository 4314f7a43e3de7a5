"""The report code of the PostgreSQL systems of load.bench: merged telemetry streams, per-run
ratios, the summary's store figures and text, the store commit time from /metrics, and a clear
error without password when the benchmark's PostgreSQL is unreachable."""

from __future__ import annotations

import math
from array import array
from typing import Any

import pytest
from support import free_port

from load import report
from load.bench import Params, parse_args, ratio_pairs, summarize_steady
from load.bench_db import PostgresUnavailable, check_server
from load.fleet_sink import FleetSink, merge_streams
from load.stats import percentile
from load.systems import store_commit_ms


def stream(latencies: list[float], first: float, last: float, error: str = "") -> dict[str, Any]:
    return {"records": len(latencies), "grpc_messages": 2, "first_record_at": first, "last_record_at": last,
            "latencies_ms": array("d", latencies).tobytes(), "error": error}


def test_two_streams_are_merged_into_one_count_window_and_exact_percentiles() -> None:
    a = [float(v) for v in range(1, 100)]
    b = [1000.0 + v for v in range(1, 3)]  # the slow stream's tail must show in the p99
    merged = merge_streams([stream(a, 10.0, 12.0), stream(b, 11.0, 13.5, "UNAVAILABLE: gone")])
    assert merged["records"] == 101 and merged["records_per_instance"] == [99, 2]
    assert merged["grpc_messages"] == 4
    assert (merged["first_record_at"], merged["last_record_at"]) == (10.0, 13.5)
    everything = sorted(a + b)
    assert merged["latency"]["count"] == 101
    assert merged["latency"]["p50_ms"] == percentile(everything, 50)
    assert merged["latency"]["p99_ms"] == percentile(everything, 99) == 1001.0
    assert merged["error"] == "UNAVAILABLE: gone"


def run(system: str, n: int, msg_s: float, **extra: Any) -> dict[str, Any]:
    return {"system": system, "run": n, "complete": True, "messages_per_s": msg_s, "records_per_s": msg_s,
            "cpu_s_per_100k": 2.0, "peak_rss_mib": 90.0, "generator_rate": 1e5, "latency": {}, **extra}


RUNS = [
    run("reference", 0, 100_000), run("gateway", 0, 40_000),
    run("gateway-pg2", 0, 20_000, store_commit_ms=4.0, store_cpu_s_per_100k=1.0),
    run("reference", 1, 50_000), run("gateway", 1, 25_000),
    run("gateway-pg2", 1, 25_000, store_commit_ms=6.0, store_cpu_s_per_100k=3.0),
]
SYSTEMS = ("reference", "gateway", "gateway-pg2")


def test_every_system_gets_its_ratio_to_reference_and_the_postgres_ones_to_the_embedded_gateway() -> None:
    ratios = ratio_pairs(RUNS, SYSTEMS, 2)
    assert set(ratios) == {"gateway/reference", "gateway-pg2/reference", "gateway-pg2/gateway"}
    # medians of the per-run ratios (same run, same drift), not ratios of medians
    assert ratios["gateway-pg2/reference"]["median"] == pytest.approx((0.2 + 0.5) / 2)
    assert ratios["gateway-pg2/gateway"]["median"] == pytest.approx((0.5 + 1.0) / 2)
    assert ratios["gateway/reference"]["median"] == pytest.approx((0.4 + 0.5) / 2)


def test_the_summary_carries_the_store_figures_of_the_postgres_systems_only() -> None:
    summary, _ = summarize_steady(RUNS, Params(systems=SYSTEMS, repeat=2))
    assert summary["gateway-pg2"]["store_commit_ms"]["median"] == 5.0
    assert summary["gateway-pg2"]["store_cpu_s_per_100k"]["median"] == 2.0
    assert "store_cpu_s_per_100k" not in summary["gateway"]
    assert summary["gateway-pg2"]["messages_per_s"]["median"] == 22_500


def test_the_text_summary_shows_each_system_its_store_commit_and_the_store_cost_of_the_invocation() -> None:
    summary, ratios = summarize_steady(RUNS, Params(systems=SYSTEMS, repeat=2))
    cost = {"cars": 200, "batches": 5, "results": {
        "postgres/100": {"batch_p50_ms": 2.5, "batch_p99_ms": 3.0, "us_per_vehicle": 25.0,
                         "vehicles_per_s": 40_000},
    }}
    doc = {"scenario": "steady", "params": {"repeat": 2}, "summary": summary, "ratios": ratios,
           "store_cost": cost}
    text = report.text_summary(doc)
    assert "  gateway-pg2: 22,500 [20,000-25,000] msg/s" in text
    assert "store commit per batch 5.00 ms [4.00-6.00], PostgreSQL CPU 2.00 s/100k" in text
    assert "ratio gateway-pg2/gateway: 0.750" in text
    assert "postgres/100: batch p50/p99 2.50 / 3.00 ms, 25.0 us per vehicle, 40,000 vehicles/s" in text
    assert "store cost" not in report.text_summary({**doc, "store_cost": None})


def test_the_store_commit_time_is_the_mean_per_commit_between_two_scrapes() -> None:
    before = {"gateway_store_commit_seconds_count": 10.0, "gateway_store_commit_seconds_sum": 1.0}
    after = {"gateway_store_commit_seconds_count": 30.0, "gateway_store_commit_seconds_sum": 1.1}
    ms, count = store_commit_ms(before, after)
    assert ms == pytest.approx(5.0) and count == 20
    idle_ms, idle_count = store_commit_ms(after, after)
    assert math.isnan(idle_ms) and idle_count == 0


def test_two_instances_share_one_subscription_with_two_slots_and_one_instance_needs_no_group() -> None:
    two = FleetSink("gateway-pg2", 2, "postgresql://postgres@127.0.0.1:5432/postgres").settings()
    assert (two["GATEWAY_MQTT_SLOTS"], two["GATEWAY_MQTT_SHARED_GROUP"]) == ("2", "bench")
    assert two["GATEWAY_STORE_URL"].startswith("postgresql://postgres@127.0.0.1:5432/gwbench_")
    one = FleetSink("gateway-pg", 1, "postgresql://postgres@127.0.0.1:5432/postgres").settings()
    assert one["GATEWAY_MQTT_SLOTS"] == "1" and "GATEWAY_MQTT_SHARED_GROUP" not in one


def test_the_postgres_systems_are_accepted_and_an_unknown_one_is_refused(
    capsys: pytest.CaptureFixture[str],
) -> None:
    p, _ = parse_args(["--systems", "reference,gateway,gateway-pg,gateway-pg2", "--no-store-cost"])
    assert p.systems == ("reference", "gateway", "gateway-pg", "gateway-pg2") and not p.store_cost
    with pytest.raises(SystemExit):
        parse_args(["--systems", "gateway-pg3"])
    assert "choose from reference, naive, gateway, gateway-pg, gateway-pg2" in capsys.readouterr().err


def test_an_unreachable_server_is_a_clear_error_without_its_password() -> None:
    url = f"postgresql://bench:s3cret-pw@127.0.0.1:{free_port()}/postgres"
    with pytest.raises(PostgresUnavailable) as caught:
        check_server(url)
    message = str(caught.value)
    assert "s3cret-pw" not in message
    assert "GATEWAY_BENCH_PG_DSN" in message and "127.0.0.1" in message
