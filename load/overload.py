"""``--scenario overload``: QoS 1 telemetry offered above the gateway's capacity (issue 12).

A fresh broker, the gateway (embedded SQLite, shipped settings except the per-car limits,
which are lifted: this measures the gateway's capacity, not a car over its limits) and one
SubscribeTelemetry consumer. ``--cars`` cars publish QoS 1 telemetry for ``--phase`` seconds
as fast as the generator goes (each car up to 64 unacknowledged; the broker acknowledges at its
own pace, well above the gateway's), or at ``--rate`` messages/s. Then they stop and the run
waits until the consumer has every message the broker acknowledged (or makes no progress for
``stall_s``).

Reported: offered rate (what the broker acknowledged per second) vs. processed rate (what the
gateway processed per second during the overload, and until the backlog was drained); the
gateway's RSS over time, its peak, and the bound (RSS at the end of the overload / RSS when
reading first paused, i.e. once the queue had filled; the largest RSS after that); the
broker's RSS (its queue is where the backlog belongs); the pauses of reading from the broker
(gateway_ingress_backpressure_total, _paused_seconds_total, the share of samples with
gateway_ingress_paused = 1, the largest gateway_ingress_queued_messages seen); latency
percentiles (publish -> consumer; they include the backlog's wait); and "no QoS 1 loss": every
(VIN, sequence) the generator got a PUBACK for, received by the consumer (duplicates are
allowed by at least once and counted).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

from load.consumer import subscriber_main
from load.fleet import generate_fleet
from load.generator import Generator, source_ips
from load.harness import BenchBroker, GatewayProcess, metric_sum
from load.stats import ProcWatch, safe_ratio
from load.systems import CTX, TELEMETRY_RECEIVED, _recv, gateway_counts

SETTLE_S = 5.0  # without a pause, RSS after this much overload is the baseline of the bound
SAMPLE_S = 0.5  # RSS, progress and /metrics samples
SENDS = 10**9  # the phase's duration ends the sending, not a message count
# The per-car limits lifted, quarantine off: every car sends faster than a real car may.
SETTINGS = {"GATEWAY_CAR_RATE_PER_S": "1000000", "GATEWAY_CAR_BURST": "10000000",
            "GATEWAY_CAR_QUARANTINE_EXCESS": "0"}


def missing(acked: dict[str, list[list[int]]], received: dict[str, list[list[int]]]) -> int:
    """How many acknowledged (VIN, sequence) pairs the consumer did not receive."""
    lost = 0
    for vin, spans in acked.items():
        have = received.get(vin, [])
        for lo, hi in spans:
            want = hi - lo + 1
            covered = sum(max(0, min(hi, b) - max(lo, a) + 1) for a, b in have)
            lost += want - covered
    return lost


def _sample(gw: GatewayProcess, broker_pid: int, gen: Generator, received: Any, t0: float) -> dict[str, Any]:
    m = gw.metrics()
    return {
        "t": round(time.time() - t0, 2),
        "gateway_rss_mib": round(ProcWatch(gw.pid).rss_kib() / 1024, 1),
        "broker_rss_mib": round(ProcWatch(broker_pid).rss_kib() / 1024, 1),
        "sent": gen.sent, "acked": gen.acked, "received": int(received.value),
        "processed": int(metric_sum(m, TELEMETRY_RECEIVED)),
        "paused": int(metric_sum(m, "gateway_ingress_paused")),
        "queued": int(metric_sum(m, "gateway_ingress_queued_messages")),
    }


def run_overload(*, cars: int, workers: int, rate: float, phase_s: float, stall_s: float, seed: int,
                 workdir: Path, queue_messages: int = 0) -> dict[str, Any]:
    """queue_messages: the gateway's ingress_queue_messages (0: the shipped 50,000); the smoke
    run makes it tiny, so that its short overload pauses reading too."""
    fleet = generate_fleet(cars, seed)
    records = CTX.Value("q", 0, lock=False)
    pipe, child = CTX.Pipe()
    series: list[dict[str, Any]] = []
    with BenchBroker(workdir / "broker") as broker:
        settings = dict(SETTINGS)
        if queue_messages:
            settings["GATEWAY_INGRESS_QUEUE_MESSAGES"] = str(queue_messages)
        gw = GatewayProcess(workdir / "gateway", broker, log_level="WARNING", settings=settings)
        gen = Generator(fleet, port=broker.port, workers=workers, ips=source_ips(workers, 7), seed=seed)
        sub = CTX.Process(target=subscriber_main,  # track: (VIN, sequence) received, to find QoS 1 loss
                          args=(gw.grpc_target, records, child, 0, gw.token, False, True),
                          daemon=True, name="bench-overload-subscriber")
        try:
            gw.wait_ready()
            sub.start()
            _recv(pipe, 30, "the telemetry subscriber")
            gw.wait_metric("gateway_grpc_stream_subscribers", 1, 30)
            gen.start()
            gen.run("connect", boot=True, concurrency=64, timeout=300)
            if gen.connected < len(fleet):
                raise RuntimeError(f"only {gen.connected} of {len(fleet)} cars connected")
            gw.wait_metric('gateway_messages_received_total{kind="hello"}', len(fleet), 120)
            before = gw.metrics()
            gw_watch, broker_watch = ProcWatch(gw.pid), ProcWatch(broker.pid)
            gw_watch.begin()
            broker_watch.begin()
            t0 = time.time() + 0.3
            gen.send("steady", per_worker=gen.split_messages(SENDS), start_at=t0, rate=rate / gen.workers,
                     qos=1, burst=4, duration_s=phase_s, report_acked=True)
            replies: list[dict[str, Any]] | None = None
            while replies is None:  # the overload, then the generator's wait for its PUBACKs
                time.sleep(SAMPLE_S)
                series.append(_sample(gw, broker.pid, gen, records, t0))
                replies = gen.poll()
            overload_end = max(r["last_send"] for r in replies) - t0
            acked_runs: dict[str, list[list[int]]] = {}
            for r in replies:
                acked_runs.update(r["acked"])
            acked = sum(hi - lo + 1 for spans in acked_runs.values() for lo, hi in spans)
            end_of_overload = gw.metrics()
            # The drain: until the consumer has as many distinct records as were acknowledged.
            last_change, last = time.monotonic(), -1
            while True:
                series.append(_sample(gw, broker.pid, gen, records, t0))
                got = series[-1]["processed"] - int(metric_sum(before, TELEMETRY_RECEIVED))
                if got >= acked and int(records.value) >= acked:
                    break
                if got != last:
                    last_change, last = time.monotonic(), got
                elif time.monotonic() - last_change > stall_s:
                    print(f"overload: drain stalled at {got:,} of {acked:,}", file=sys.stderr)
                    break
                time.sleep(SAMPLE_S)
            drained_at = time.time() - t0
            gw_cpu, broker_cpu = gw_watch.cpu(), broker_watch.cpu()
            peak_kib, broker_peak_kib = gw_watch.hwm_kib(), broker_watch.hwm_kib()
            after = gw.metrics()
            pipe.send("stop")
            stats = _recv(pipe, 60, "the telemetry subscriber")
        finally:
            gen.close()
            if sub.is_alive():
                sub.kill()
            code = gw.stop()
    def delta(name: str, until: dict[str, float] = after) -> float:
        return metric_sum(until, name) - metric_sum(before, name)

    def per_s(n: float, seconds: float) -> float | None:
        return round(n / seconds, 1) if seconds > 0 else None

    lost = missing(acked_runs, stats["sequences"])
    during = [s for s in series if s["t"] <= overload_end] or series
    # The baseline of the bound: RSS once the queue first filled (reading paused), else after
    # SETTLE_S; before that the gateway's queue is still growing towards its limit.
    settled = next((s for s in during if s["paused"]), None) or next(
        (s for s in during if s["t"] >= SETTLE_S), during[0])
    last_during = during[-1]
    in_overload = delta(TELEMETRY_RECEIVED, end_of_overload)
    processed = delta(TELEMETRY_RECEIVED)
    received = sum(hi - lo + 1 for spans in stats["sequences"].values() for lo, hi in spans)
    lat = stats["latency"]
    lat.pop("histogram", None)
    run = {
        "complete": lost == 0 and processed >= acked,
        "cars": cars, "phase_s": phase_s, "rate": rate, "queue_messages": queue_messages or None,
        "sent": sum(r["sent"] for r in replies), "acked": acked,
        "offered_per_s": per_s(acked, overload_end),
        "processed_in_overload": int(in_overload),
        "processed_per_s_in_overload": per_s(in_overload, overload_end),
        "processed_per_s_until_drained": per_s(processed, drained_at),
        "overload_s": round(overload_end, 2), "drained_at_s": round(drained_at, 2),
        "received_distinct": received, "lost_acked": lost, "duplicates": stats["duplicates"],
        "gateway_cpu_s": round(gw_cpu, 2), "broker_cpu_s": round(broker_cpu, 2),
        "gateway_cpu_us_per_msg": round(gw_cpu / processed * 1e6, 2) if processed else None,
        # VmHWM, or a sample above it (the kernel updates the high-water mark lazily)
        "gateway_peak_rss_mib": max(round(peak_kib / 1024, 1), max(s["gateway_rss_mib"] for s in series)),
        "gateway_rss_settled_mib": settled["gateway_rss_mib"], "gateway_rss_settled_at_s": settled["t"],
        "gateway_rss_end_of_overload_mib": last_during["gateway_rss_mib"],
        "gateway_rss_max_after_settled_mib": max(
            s["gateway_rss_mib"] for s in series if s["t"] >= settled["t"]),
        "gateway_rss_growth": round(safe_ratio(last_during["gateway_rss_mib"], settled["gateway_rss_mib"]),
                                    3),
        "broker_peak_rss_mib": round(broker_peak_kib / 1024, 1),
        "broker_rss_end_of_overload_mib": last_during["broker_rss_mib"],
        "pauses": int(delta("gateway_ingress_backpressure_total")),
        "paused_s": round(delta("gateway_ingress_paused_seconds_total"), 2),
        "paused_sample_share": round(sum(s["paused"] for s in during) / len(during), 3),
        "max_queued_seen": max((s["queued"] for s in series), default=0),
        "latency": lat,
        "gateway_metrics": gateway_counts(after),
        "consumer_error": stats.get("error", ""),
        "gateway_exit_code": code, "log_problems": gw.log_problems(),
        "series": series,
    }
    return {"runs": [run]}


def summary_lines(doc: dict[str, Any]) -> list[str]:
    """The text summary of an overload run (load/report.py)."""
    lines = []
    nan = float("nan")
    for r in doc.get("runs", []):
        lat = r["latency"]
        lines += [
            f"  offered (acked by the broker) {r['offered_per_s'] or 0:,.0f} msg/s for {r['overload_s']} s; "
            f"gateway processed {r['processed_per_s_in_overload'] or 0:,.0f} msg/s meanwhile, "
            f"{r['processed_per_s_until_drained'] or 0:,.0f} msg/s until drained at {r['drained_at_s']} s",
            f"  QoS 1: {r['acked']:,} acknowledged to the cars, {r['received_distinct']:,} distinct "
            f"received, lost {r['lost_acked']:,}, duplicates {r['duplicates']:,}",
            f"  gateway RSS {r['gateway_rss_settled_mib']} MiB at {r['gateway_rss_settled_at_s']} s -> "
            f"{r['gateway_rss_end_of_overload_mib']} MiB at the end of the overload "
            f"(x{r['gateway_rss_growth']}; at most {r['gateway_rss_max_after_settled_mib']} MiB since), "
            f"peak {r['gateway_peak_rss_mib']} MiB; broker RSS "
            f"{r['broker_rss_end_of_overload_mib']} MiB then, peak {r['broker_peak_rss_mib']} MiB",
            f"  reading paused {r['pauses']:,} times, {r['paused_s']} s in all (paused in "
            f"{r['paused_sample_share']:.0%} of the samples), largest queue seen {r['max_queued_seen']:,}",
            f"  latency p50/p99/p99.9 {lat.get('p50_ms', nan):,.0f} / {lat.get('p99_ms', nan):,.0f} / "
            f"{lat.get('p999_ms', nan):,.0f} ms (publish -> consumer, backlog included); "
            f"gateway CPU {r['gateway_cpu_us_per_msg']} us/msg",
        ]
    return lines
