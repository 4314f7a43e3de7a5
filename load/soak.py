"""``python -m load.bench --scenario soak``: the gateway at a steady paced load for a long time,
its memory watched from outside.

One broker, the gateway (embedded SQLite) and a SubscribeTelemetry consumer (the same parts as
the steady ``gateway`` system, load/systems.py); ``--cars`` connect and say Hello, then the
generator sends telemetry paced at ``--rate`` (required: about half the gateway's max rate,
which ``--half-load`` of the steady scenario reports) for ``--duration`` seconds, while the
gateway's RSS (/proc VmRSS) is sampled every few seconds. The first 10 % of the duration is
warm-up and left out of the flatness verdict: the allocator's arenas, SQLite's page cache, the
per-car state and the gRPC buffers reach their working size in the first batches; growth after
that is what a leak looks like. Reported: RSS min/max/mean, the largest deviation from the mean
in %, the linear trend (KiB/min), ``flat_within_5pct``, CPU us/msg of the gateway and the
broker, latency percentiles, and sent vs received (none lost).
"""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from load.fleet import generate_fleet
from load.generator import Generator, source_ips
from load.harness import BenchBroker
from load.stats import ProcWatch, flatness, safe_ratio, us_per_message
from load.systems import GatewaySink

if TYPE_CHECKING:
    from load.bench import Params

WARMUP_FRACTION = 0.10
DRAIN_STALL_S = 20.0  # after the last send: no new record for this long ends the wait


def sample_every(duration_s: float) -> float:
    """About 100+ samples over the run, at most one per 5 s (a /proc read is cheap)."""
    return max(0.2, min(5.0, duration_s / 100))


def run_soak(p: Params, workdir: Path) -> dict[str, Any]:
    fleet = generate_fleet(p.cars, p.seed)
    # rate x duration messages, paced: the run lasts the duration when the generator keeps up
    # (its real rate and send time are reported), and every one of them must arrive.
    messages = math.ceil(p.rate * p.duration_s)
    sink = GatewaySink()
    every = sample_every(p.duration_s)
    rss: list[tuple[float, float]] = []
    # Records sent but not yet at the consumer, at each RSS sample: a queue the gateway holds
    # while it falls behind (a busy machine) shows as RSS that comes back down, not a leak.
    backlog: list[tuple[float, int]] = []
    with BenchBroker(workdir / "broker") as broker:
        gen = Generator(fleet, port=broker.port, workers=p.workers, ips=source_ips(p.workers, 1), seed=p.seed)
        try:
            sink.start(broker, workdir / "gateway", messages + len(fleet), messages * p.samples)
            gen.start()
            gen.run("connect", boot=True, concurrency=p.concurrency, timeout=300)
            if gen.connected < len(fleet):
                raise RuntimeError(f"only {gen.connected} of {len(fleet)} cars connected")
            sink.wait_hellos(len(fleet))
            assert sink.gw is not None
            gw_watch, broker_watch = ProcWatch(sink.gw.pid), ProcWatch(broker.pid)
            broker_watch.begin()
            sink.begin()
            start_at = time.time() + 0.3
            gen.send("steady", per_worker=gen.split_messages(messages), start_at=start_at,
                     rate=p.rate / gen.workers, qos=p.qos, burst=p.burst, samples=p.samples)
            replies = None
            next_sample, next_print = start_at, start_at
            while replies is None:
                now = time.time()
                if now >= next_sample:
                    rss.append((round(now - start_at, 3), float(gw_watch.rss_kib())))
                    backlog.append((rss[-1][0], gen.sent * p.samples - sink.received()))
                    next_sample += every
                if now >= next_print and rss:
                    next_print += 10.0
                    print(f"soak {now - start_at:6.0f}s sent={gen.sent:,} received={sink.received():,} "
                          f"rss={rss[-1][1] / 1024:.1f} MiB", file=sys.stderr, flush=True)
                replies = gen.poll()
                time.sleep(0.05)
            sent = sum(r["sent"] for r in replies)
            drained = wait_drained(sink, sent * p.samples)
            broker_cpu = broker_watch.cpu()
            result = sink.finish()
        finally:
            gen.close()
            sink.close()
    first = min(r["first_send"] for r in replies)
    send_s = max(r["last_send"] for r in replies) - first
    received = int(result.get("records", 0))
    cpu_s = float(result.get("cpu_s", math.nan))
    run = {
        "system": "gateway",
        "run": 0,
        "complete": drained and received == sent * p.samples,
        "offered_rate": p.rate,
        "sent": sent,
        "received_records": received,
        "lost_records": sent * p.samples - received,
        "generator_send_s": round(send_s, 3),
        "generator_rate": round(sent / send_s) if send_s > 0 else None,
        "cpu_s": round(cpu_s, 3),
        "broker_cpu_s": round(broker_cpu, 3),
        "cpu_us_per_msg": round(us_per_message(cpu_s, sent), 3),
        "broker_cpu_us_per_msg": round(us_per_message(broker_cpu, sent), 3),
        "cpu_vs_broker": round(safe_ratio(cpu_s, broker_cpu), 3),
        "latency": result.get("latency", {}),
        "peak_rss_mib": round(result["peak_rss_kib"] / 1024, 1) if "peak_rss_kib" in result else None,
        "rss_samples": rss,
        "backlog_samples": backlog,
        "backlog_max_records": max((b for _, b in backlog), default=0),
        "warmup_s": round(p.duration_s * WARMUP_FRACTION, 1),
        "rss": flatness(rss, p.duration_s * WARMUP_FRACTION),
        "gateway_metrics": result.get("gateway_metrics", {}),
        "exit_code": result.get("exit_code"),
        "log_problems": result.get("log_problems", []),
        "error": result.get("error", ""),
    }
    return {"runs": [run], "summary": {"rss": run["rss"]}}


def wait_drained(sink: GatewaySink, expect: int) -> bool:
    """Until the consumer has every record sent, or nothing new arrived for DRAIN_STALL_S."""
    sink.expect = expect  # what was sent (a car whose link dropped sends less)
    last, since = -1, time.monotonic()
    while not sink.complete():
        got = sink.received()
        if got != last:
            last, since = got, time.monotonic()
        elif time.monotonic() - since > DRAIN_STALL_S:
            return False
        time.sleep(0.1)
    return True
