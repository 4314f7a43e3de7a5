"""In-process microbenchmark of the embedded default's hot path: Pipeline.process on a fixed
batch workload with the real SQLite store, no broker and no network.

    .venv/bin/python -m load.pipeline_micro --messages 100000
    valgrind --tool=callgrind --callgrind-out-file=/dev/null .venv/bin/python -m load.pipeline_micro ...

The workload is the steady benchmark's (load/bench.py): 1,000 cars say Hello, then send
telemetry envelopes (one sample, the generator's payloads) round robin, in batches of
--batch messages, the clock advancing as at ~33,000 msg/s so the per-car limits pass them as in
the real run. One telemetry subscriber takes every batch of records. Only the telemetry batches
are measured (CPU time of the process: the pipeline's task and the SQLite thread together); the
Hellos and --warmup batches before them are not.

Why in-process: the wall-clock benchmark shares two cores with the broker, the generator and
other work, so a few per cent are lost in its noise. This fixed workload gives CPU microseconds
per message, and under callgrind a deterministic instruction count: run it with two --messages
values and divide the difference of the totals by the difference of the messages, which
removes start-up and imports (see load/README.md, "Pipeline microbenchmark").

Only constructor arguments that the pipeline had before issue 10 (commit 0eceb02) are used, so
the same file measures that checkout too (copied into it, run with its own code).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from gateway.clock import ManualClock
from gateway.config import PROJECT_ROOT, Config
from gateway.egress.telemetry import TelemetryFanout, TelemetrySubscriber
from gateway.metrics import Metrics
from gateway.pipeline import Pipeline
from gateway.reference import ReferenceStore
from gateway.session.hub import EventHub
from gateway.session.ratelimit import CarLimits
from gateway.session.tracker import SessionTracker
from gateway.store.sqlite import SqliteStore
from load import payloads
from load.fleet import Car, generate_fleet

STEADY_RATE = 33_000.0  # msg/s of the steady benchmark's embedded gateway: the clock's pace


@dataclass(frozen=True, slots=True)
class Msg:
    topic: str
    payload: bytes
    qos: int = 1  # as the broker delivers uplinks to the gateway


def workload(
    cars: Sequence[Car], messages: int, batch: int, start: float
) -> tuple[list[Msg], list[list[Msg]]]:
    """The Hellos (one per car, sent now: the generator's Hellos carry the wall clock) and the
    telemetry batches, `messages` envelopes in all, sent from `start` on at STEADY_RATE."""
    hellos = [
        Msg(f"v1/vehicles/{c.vin}/up", payloads.hello(c, 1, connection_id=i + 1, boot=True))
        for i, c in enumerate(cars)
    ]
    streams = [payloads.TelemetryStream(c) for c in cars]
    topics = [f"v1/vehicles/{c.vin}/up" for c in cars]
    sent_ns = int(start * 1e9)
    gap_ns = int(1e9 / STEADY_RATE)
    out: list[Msg] = []
    for i in range(messages):
        car = i % len(cars)
        seq = 2 + i // len(cars)
        out.append(Msg(topics[car], streams[car].payload(seq, sent_ns + i * gap_ns)))
    return hellos, [out[k : k + batch] for k in range(0, len(out), batch)]


def _framed_count(data: bytes) -> int:
    """Records in a serialized TelemetryRecords, counted from the framing without parsing them
    (parsing is the gRPC client's work, not the gateway's)."""
    n = pos = 0
    while pos < len(data):
        pos += 1  # the tag of field 1 (the only field)
        size = shift = 0
        while True:
            byte = data[pos]
            pos += 1
            size |= (byte & 0x7F) << shift
            shift += 7
            if byte < 0x80:
                break
        pos += size
        n += 1
    return n


def _drain(sub: TelemetrySubscriber) -> int:
    """Take what the pipeline queued for the subscriber (frees its slots); the records taken.
    A checkout before the shared serialized batches queues TelemetryRecords messages."""
    n = 0
    while not sub.queue.empty():
        got = sub.queue.get_nowait()
        if got is not None:
            sub.slots.release()
            records = getattr(got, "records", None)
            n += len(records) if records is not None else _framed_count(got)
    return n


async def run(
    *, cars: int, messages: int, batch: int, warmup: int, data_dir: Path, commit_every: int = 1
) -> dict[str, float]:
    cfg = Config()
    fleet = generate_fleet(cars, 1)
    # The gateway's clock near the wall clock: envelopes sent far from it are rejected (R-less
    # bad_timestamp), and the Hellos' sent_at is the wall clock.
    clock = ManualClock(float(int(time.time())))
    hellos, batches = workload(fleet, messages + warmup * batch, batch, clock.now())
    store = SqliteStore(path=data_dir / "gateway.db")
    await store.open()
    fanout = TelemetryFanout(queue_size=10)
    sub = fanout.subscribe(frozenset())
    pipeline = Pipeline(
        tracker=SessionTracker(await store.load_sessions(), restored_at=clock.now()),
        store=store,
        hub=EventHub(),
        telemetry=fanout,
        metrics=Metrics(),
        clock=clock,
        reference=ReferenceStore.load(PROJECT_ROOT),
        max_payload_bytes=cfg.max_payload_bytes,
        queue_messages=cfg.ingress_queue_messages,
        ack=lambda _batch: None,
        pause_reading=lambda: None,
        resume_reading=lambda: None,
        heartbeat_default_s=cfg.heartbeat_default_s,
        limits=CarLimits(cfg.car_rate_per_s, cfg.car_burst, cfg.car_hello_rate_per_s, cfg.car_hello_burst),
    )
    step = batch / STEADY_RATE
    try:
        for k in range(0, len(hellos), batch):
            await pipeline.process(hellos[k : k + batch])
            clock.advance(step)
        for b in batches[:warmup]:
            await pipeline.process(b)
            _drain(sub)
            clock.advance(step)
        measured = batches[warmup:]
        records = 0
        cpu0, wall0 = time.process_time(), time.perf_counter()
        for i, b in enumerate(measured):
            if commit_every > 1:  # socket reads applied one by one, committed together
                await pipeline.process(b, durable=(i + 1) % commit_every == 0 or i + 1 == len(measured))
            else:
                await pipeline.process(b)
            records += _drain(sub)
            clock.advance(step)
        cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    finally:
        await store.close()
    n = sum(len(b) for b in measured)
    if records != n:  # every envelope has one sample: a record lost is a broken benchmark
        raise SystemExit(f"{n} envelopes gave {records} records")
    return {"messages": n, "cpu_s": cpu, "wall_s": wall, "cpu_us_per_msg": cpu / n * 1e6,
            "wall_us_per_msg": wall / n * 1e6}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--cars", type=int, default=1000)
    ap.add_argument("--messages", type=int, default=100_000, help="telemetry envelopes measured")
    ap.add_argument("--batch", type=int, default=500, help="messages per Pipeline.process call")
    ap.add_argument("--warmup", type=int, default=20, help="telemetry batches before measuring")
    ap.add_argument("--repeat", type=int, default=1, help="runs, each on a fresh database")
    ap.add_argument("--commit-every", type=int, default=1,
                    help="batches per commit, as the group commit makes them (needs a checkout with it)")
    a = ap.parse_args()
    for _ in range(a.repeat):
        with tempfile.TemporaryDirectory(prefix="pipeline-micro-") as tmp:
            result = asyncio.run(
                run(cars=a.cars, messages=a.messages, batch=a.batch, warmup=a.warmup, data_dir=Path(tmp),
                    commit_every=a.commit_every)
            )
        print(json.dumps({k: round(v, 3) for k, v in result.items()}), flush=True)


if __name__ == "__main__":
    main()
