"""``--scenario flood``: does one flooding car slow the others? (issue: per-car limits)

Two runs, each with a fresh gateway and the broker it manages (as `make run` starts them):
``bucket``, the per-car token bucket alone (``car_quarantine_excess`` 0), and ``quarantine``,
the shipped defaults (the bucket, and a car far over it quarantined: the broker drops its
uplink, gateway/session/quarantine.py). In each, ``--cars`` normal cars publish telemetry
(QoS 0) paced at ``--rate`` messages/s in total, each envelope stamped with its send time; a
SubscribeTelemetry client measures every normal car's record latency (receipt - sent_at).
Three phases of ``--phase`` seconds each:

1. ``baseline``: the normal cars only;
2. ``flood_good``: plus one more car (its own process, one raw MQTT connection) publishing valid
   telemetry envelopes (fresh sequences) as fast as its socket takes them;
3. ``flood_bad``: another car doing the same with garbage payloads (not a protobuf).

The measurement of a flood phase starts 0.5 s after the flood did (the burst is spent, and in
``quarantine`` the broker has been told within the first ~0.1 s); the p99 of those first
0.5 s is reported apart (``onset_p99_ms``). Reported per phase: the
normal cars' latency p50/p99, records received and lost, the flooder's sent count, the
gateway's rate_limited and quarantined counts; and per run the ratios flood/baseline of p50
and p99 (the bound: within 2x).
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing as mp
import random
import socket
import time
from pathlib import Path
from typing import Any

import grpc

from gateway._gen.telematics.v1 import telemetry_pb2, telemetry_pb2_grpc
from gateway.api.client import bearer_metadata
from load import frames, payloads
from load.fleet import Car, generate_fleet
from load.harness import GatewayProcess, metric_sum
from load.stats import Latencies, safe_ratio

PHASES = ("baseline", "flood_good", "flood_bad")
RATE_LIMITED = 'gateway_messages_rejected_total{reason="rate_limited"}'
QUARANTINED = 'gateway_messages_rejected_total{reason="quarantined"}'
QUARANTINES = "gateway_car_quarantines_total"
# GATEWAY_* settings of each run; the rest are the shipped defaults.
DEFENCES = {"bucket": {"GATEWAY_CAR_QUARANTINE_EXCESS": "0"}, "quarantine": {}}


def _flood_main(port: int, car: Car, bad: bool, ready: Any, stop: Any, sent: Any, rate: float = 0.0) -> None:
    """The flooding car: CONNECT, then PUBLISH (QoS 0) in chunks as fast as the socket allows,
    or at `rate` messages/s (0: unpaced; a paced flood keeps the flooder's own process from
    taking a whole core of a small machine, which is then measured instead of the gateway).

    The payloads are encoded before the flood starts (valid envelopes with increasing sequences,
    cycled; or garbage), so the flooder's own CPU, on the same machine, is not what is measured.
    """
    topic = f"v1/vehicles/{car.vin}/up"
    if bad:
        chunks = [frames.publish(topic, b"\xff\xfe not an envelope " * 4) * 200]
    else:
        stream, now = payloads.TelemetryStream(car), time.time_ns()
        chunks = [b"".join(frames.publish(topic, stream.payload(c * 200 + i + 1, now)) for i in range(200))
                  for c in range(250)]  # 50,000 envelopes
    sock = socket.create_connection(("127.0.0.1", port))
    sock.sendall(frames.connect(car.vin, keepalive=60))
    sock.recv(64)  # CONNACK
    ready.set()
    count = 0
    started = time.monotonic()
    try:
        while not stop.is_set():
            if rate and count > (time.monotonic() - started) * rate:
                time.sleep(200 / rate)  # paces the flooder (a load source, not a test)
                continue
            sock.sendall(chunks[(count // 200) % len(chunks)])
            count += 200
            sent.value = count
    except OSError:
        pass
    finally:
        sock.close()


class NormalCars:
    """``n`` raw MQTT connections on this event loop, paced telemetry round-robin."""

    def __init__(self, fleet: list[Car], port: int) -> None:
        self.fleet, self.port = fleet, port
        self.writers: list[asyncio.StreamWriter] = []
        self.streams = [payloads.TelemetryStream(car) for car in fleet]
        self.topics = [f"v1/vehicles/{car.vin}/up" for car in fleet]
        self.seq = [1] * len(fleet)
        self.sent = 0

    async def connect(self) -> None:
        for car in self.fleet:
            reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
            writer.write(frames.connect(car.vin, keepalive=60))
            await reader.read(64)  # CONNACK
            writer.write(frames.publish(f"v1/vehicles/{car.vin}/up",
                                        payloads.hello(car, 1, random.getrandbits(63), boot=False)))
            self.writers.append(writer)

    async def run(self, rate: float, seconds: float) -> None:
        start = time.monotonic()
        due = 0
        i = 0
        while (elapsed := time.monotonic() - start) < seconds:
            target = int(elapsed * rate)
            now = time.time_ns()
            while due < target:
                k = i % len(self.fleet)
                self.seq[k] += 1
                payload = self.streams[k].payload(self.seq[k], now)
                self.writers[k].write(frames.publish(self.topics[k], payload))
                due += 1
                i += 1
            await asyncio.sleep(0.005)
        self.sent += due

    def close(self) -> None:
        for w in self.writers:
            w.close()


class Receiver:
    """SubscribeTelemetry: (sent_at ns, latency ms) of every normal car's record."""

    def __init__(self, target: str, flooders: set[str], token: str) -> None:
        self.target, self.flooders, self.token = target, flooders, token
        self.samples: list[tuple[int, float]] = []
        self.flooder_records = 0
        self.task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self.channel = grpc.aio.insecure_channel(self.target)
        self.call = telemetry_pb2_grpc.TelemetryServiceStub(self.channel).SubscribeTelemetry(
            telemetry_pb2.SubscribeTelemetryRequest(), metadata=bearer_metadata(self.token))
        self.task = asyncio.create_task(self._read())
        await asyncio.sleep(0.5)  # the stream is open before the cars publish

    async def _read(self) -> None:
        with contextlib.suppress(grpc.aio.AioRpcError, asyncio.CancelledError):
            async for batch in self.call:
                now = time.time_ns()
                for r in batch.records:
                    if r.vin in self.flooders:
                        self.flooder_records += 1
                        continue
                    sent = r.sent_at.seconds * 1_000_000_000 + r.sent_at.nanos
                    self.samples.append((sent, (now - sent) / 1e6))

    async def close(self) -> None:
        self.call.cancel()
        if self.task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
        await self.channel.close()


async def _phases(gw: GatewayProcess, cars: list[Car], flooders: dict[str, Car], rate: float,
                  phase_s: float, flood_rate: float = 0.0) -> dict[str, Any]:
    receiver = Receiver(gw.grpc_target, {car.vin for car in flooders.values()}, gw.token)
    await receiver.start()
    normal = NormalCars(cars, gw.mqtt_port)
    await normal.connect()
    await asyncio.sleep(0.5)  # the Hellos went through
    ctx = mp.get_context("spawn")
    out: dict[str, Any] = {}
    for phase in PHASES:
        begin_ns = time.time_ns()
        sent_before = normal.sent
        before = gw.metrics()
        proc = stop = counter = None
        onset_ns = begin_ns
        if phase != "baseline":
            ready, stop, counter = ctx.Event(), ctx.Event(), ctx.Value("q", 0)
            bad = phase == "flood_bad"
            proc = ctx.Process(target=_flood_main,
                               args=(gw.mqtt_port, flooders[phase], bad, ready, stop, counter, flood_rate))
            proc.start()
            while not ready.is_set():  # noqa: ASYNC110 - another process
                await asyncio.sleep(0.05)
            # The onset: the flood's first 0.5 s (its burst spent; in `quarantine` the broker is
            # told), reported apart, then the measured phase.
            onset_ns = time.time_ns()
            await normal.run(rate, 0.5)
            begin_ns = time.time_ns()
            sent_before = normal.sent
        await normal.run(rate, phase_s)
        end_ns = time.time_ns()
        flood_sent = 0
        if proc is not None and stop is not None and counter is not None:
            stop.set()
            proc.join(10)
            flood_sent = int(counter.value)
        # Drain: the normal cars' records of this phase arrive (or are counted lost after 10 s).
        sent = normal.sent - sent_before
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            got = [ms for t, ms in receiver.samples if begin_ns <= t < end_ns]
            if len(got) >= sent:
                break
            await asyncio.sleep(0.1)
        lat = Latencies()
        lat.extend(ms for t, ms in receiver.samples if begin_ns <= t < end_ns)
        summary = lat.summary()
        summary.pop("histogram", None)
        after = gw.metrics()
        onset = Latencies()
        onset.extend(ms for t, ms in receiver.samples if onset_ns <= t < begin_ns)
        out[phase] = {
            "normal_sent": sent,
            "normal_received": len(lat),
            "latency": summary,
            "onset_p99_ms": onset.summary().get("p99_ms", float("nan")),
            "flood_sent": flood_sent,
            "flood_sent_per_s": round(flood_sent / (phase_s + 0.5), 1) if flood_sent else 0,  # ~ from ready
            **{key: metric_sum(after, name) - metric_sum(before, name)
               for key, name in (("rate_limited", RATE_LIMITED), ("quarantined", QUARANTINED),
                                 ("car_quarantines", QUARANTINES))},
        }
    out["flooder_records_forwarded"] = receiver.flooder_records
    normal.close()
    await receiver.close()
    return out


def run_flood(
    cars: int, rate: float, phase_s: float, seed: int, workdir: Path, flood_rate: float = 0.0
) -> dict[str, Any]:
    fleet = generate_fleet(cars + 2, seed)
    normal = fleet[:-2]
    # A car of its own per flood phase: the first one may still be quarantined.
    flooders = {"flood_good": fleet[-2], "flood_bad": fleet[-1]}
    runs, ratios = [], {}
    for run_no, (defence, settings) in enumerate(DEFENCES.items()):
        gw = GatewayProcess(workdir / defence, None, log_level="ERROR", settings=settings)
        try:
            gw.wait_ready()
            phases = asyncio.run(_phases(gw, normal, flooders, rate, phase_s, flood_rate))
        finally:
            code = gw.stop()
        base = phases["baseline"]["latency"]
        for phase in PHASES[1:]:
            lat = phases[phase]["latency"]
            for q in ("p50_ms", "p99_ms"):
                ratios[f"{defence}: {phase}/baseline {q[:3]}"] = round(
                    safe_ratio(lat.get(q, float("nan")), base.get(q, float("nan"))), 2)
        complete = all(phases[ph]["normal_received"] == phases[ph]["normal_sent"] for ph in PHASES)
        runs.append({"run": run_no, "defence": defence, "complete": complete,
                     "phases": {ph: phases[ph] for ph in PHASES},
                     "flooder_records_forwarded": phases["flooder_records_forwarded"],
                     "gateway_exit_code": code, "log_problems": gw.log_problems()})
    return {"runs": runs, "summary": {"ratios": ratios}}
