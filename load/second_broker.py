"""``python -m load.second_broker``: QoS 1 uplink through ejabberd's mod_mqtt (issue 11).

ejabberd keeps one QoS 1 message in flight to a subscriber, whatever Receive Maximum the
gateway announces: the gateway's ingest rate through it is bounded by one message per
(PUBACK round trip + the pipeline's commit). Above that rate ejabberd queues for the gateway;
a queue over its `max_queue` makes it disconnect the gateway (0x97) and drop what it held,
though every one of those messages was PUBACKed to its car.

The run: a private ejabberd (load/ejabberd_node.py, `--max-queue`), the gateway as `run`
starts it (a subprocess, SQLite, ejabberd as its external broker), ``--cars`` cars on raw MQTT
5 connections publishing valid telemetry at ``--rate`` QoS 1 messages/s in total for
``--seconds``. Reported: what the cars sent, what ejabberd PUBACKed (0x00) or refused, what
the gateway took from the broker (`gateway_ingress_batch_messages` sum, every message its
pipeline committed) once it drained, the shortfall (acknowledged - received), the gateway's
reconnects, and the rate the gateway kept up with while the cars published.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from gateway import topics
from load import frames, payloads
from load.ejabberd_node import Ejabberd
from load.fleet import Car, generate_fleet
from load.harness import GatewayProcess, metric_sum

RECEIVED = "gateway_ingress_batch_messages_sum"
CAR_USER, CAR_PASSWORD = "car", b"anonymous-login"
TICK_S = 0.01  # the cars' pacing step: each car sends its share of a tick at once
MAX_UNACKED = 10_000  # per car; beyond this a car waits for PUBACKs (reported as `stalled_s`)


@dataclass
class CarCounts:
    sent: int = 0
    acked: int = 0  # PUBACK reason 0x00: the broker took responsibility for the message
    refused: dict[int, int] = field(default_factory=dict)  # other PUBACK reason codes
    stalled_s: float = 0.0  # time spent waiting for PUBACKs (MAX_UNACKED reached)

    def add(self, other: CarCounts) -> None:
        self.sent += other.sent
        self.acked += other.acked
        self.stalled_s += other.stalled_s
        for code, n in other.refused.items():
            self.refused[code] = self.refused.get(code, 0) + n


async def run_car(car: Car, port: int, rate: float, seconds: float) -> CarCounts:
    """One car: CONNECT, a Hello, then telemetry at ``rate`` msg/s for ``seconds``; waits for
    the outstanding PUBACKs (30 s at most) and disconnects."""
    counts = CarCounts()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(frames.connect(car.vin, username=CAR_USER, password=CAR_PASSWORD))
    parser = frames.FrameReader()
    unacked: set[int] = set()
    acked_some = asyncio.Event()
    connack = asyncio.get_running_loop().create_future()

    async def read() -> None:
        while data := await reader.read(65536):
            for packet in parser.feed(data):
                if packet.kind == frames.CONNACK and not connack.done():
                    connack.set_result(packet.reason_code)
                elif packet.kind == frames.PUBACK:
                    unacked.discard(packet.packet_id)
                    if packet.reason_code == 0:
                        counts.acked += 1
                    else:
                        counts.refused[packet.reason_code] = counts.refused.get(packet.reason_code, 0) + 1
                    acked_some.set()

    reading = asyncio.create_task(read())
    try:
        code = await asyncio.wait_for(connack, 10)
        if code != 0:
            raise RuntimeError(f"{car.vin}: CONNACK 0x{code:02x}")
        template = frames.PublishTemplate(topics.uplink(car.vin), qos=1)
        stream = payloads.TelemetryStream(car)
        next_id = 0

        def send(payload: bytes) -> None:
            nonlocal next_id
            next_id = next_id % 0xFFFF + 1
            unacked.add(next_id)
            writer.write(template.frame(payload, next_id))
            counts.sent += 1

        send(payloads.hello(car, 1, random.getrandbits(63), boot=True))
        seq = 1
        start = time.monotonic()
        while (elapsed := time.monotonic() - start) < seconds:
            due = int(elapsed * rate) + 1 - (seq - 1)
            while due > 0:
                if len(unacked) >= MAX_UNACKED:
                    waited = time.monotonic()
                    acked_some.clear()
                    await acked_some.wait()
                    counts.stalled_s += time.monotonic() - waited
                    break
                seq += 1
                send(stream.payload(seq, time.time_ns()))
                due -= 1
            await writer.drain()
            await asyncio.sleep(TICK_S)
        deadline = time.monotonic() + 30
        while unacked and time.monotonic() < deadline:
            acked_some.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(acked_some.wait(), 1)
        writer.write(frames.disconnect())
        await writer.drain()
    finally:
        reading.cancel()
        writer.close()
    return counts


@dataclass
class Result:
    max_queue: int
    cars: int
    rate: float
    seconds: float
    sent: int
    acked: int
    refused: dict[int, int]
    received: int
    shortfall: int  # acknowledged by the broker, never received by the gateway
    received_while_publishing: int
    kept_up_msgs_per_s: float
    drain_s: float  # after the cars stopped, until the gateway had everything (or gave up)
    gateway_reconnects: float
    stalled_s: float
    messages_per_batch: float  # ~1 through ejabberd: one message in flight
    commit_ms_mean: float  # the store's share of each round trip (gateway_store_commit_seconds)


async def publish_all(cars: list[Car], port: int, rate: float, seconds: float) -> CarCounts:
    total = CarCounts()
    for counts in await asyncio.gather(*(run_car(car, port, rate / len(cars), seconds) for car in cars)):
        total.add(counts)
    return total


def run(*, cars: int, rate: float, seconds: float, max_queue: int, directory: Path,
        drain_timeout_s: float = 180.0) -> Result:
    node = Ejabberd(directory=directory / "ejabberd", max_queue=max_queue)
    node.start_sync()
    gw = GatewayProcess(directory / "gateway", None, log_level="WARNING", settings={
        "GATEWAY_MQTT_URL": node.url,
        # The per-car limits are a policy, not the subject here: none of these messages is over it.
        "GATEWAY_CAR_RATE_PER_S": str(max(100.0, 2 * rate / cars)),
        "GATEWAY_CAR_BURST": str(max(1000, int(2 * rate / cars))),
    })
    try:
        gw.wait_ready(60)
        fleet = generate_fleet(cars, seed=11)
        started = time.monotonic()
        counts = asyncio.run(publish_all(fleet, node.port, rate, seconds))
        published_s = time.monotonic() - started
        during = int(metric_sum(gw.metrics(), RECEIVED))
        stopped = time.monotonic()
        try:
            received = int(gw.wait_metric(RECEIVED, counts.acked, timeout=drain_timeout_s))
        except TimeoutError:
            received = int(metric_sum(gw.metrics(), RECEIVED))
        drain_s = time.monotonic() - stopped
        final = gw.metrics()
        reconnects = metric_sum(final, "gateway_mqtt_reconnects_total")
        batches = metric_sum(final, "gateway_ingress_batch_messages_count")
        commits = metric_sum(final, "gateway_store_commit_seconds_count")
        commit_s = metric_sum(final, "gateway_store_commit_seconds_sum")
    finally:
        gw.stop()
        node.stop_sync()
    return Result(
        max_queue=max_queue, cars=cars, rate=rate, seconds=seconds, sent=counts.sent,
        acked=counts.acked, refused=counts.refused, received=received,
        shortfall=max(0, counts.acked - received), received_while_publishing=during,
        kept_up_msgs_per_s=round(during / published_s, 1), drain_s=round(drain_s, 2),
        gateway_reconnects=reconnects, stalled_s=round(counts.stalled_s, 2),
        messages_per_batch=round(received / batches, 2) if batches else 0.0,
        commit_ms_mean=round(1000 * commit_s / commits, 3) if commits else 0.0,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--cars", type=int, default=10)
    parser.add_argument("--rate", type=float, default=2000.0, help="QoS 1 messages/s, all cars together")
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--max-queue", type=int, action="append",
                        help="ejabberd's mod_mqtt max_queue; repeat for several runs "
                             "(default: 5000, 1000000)")
    parser.add_argument("--drain-timeout", type=float, default=180.0,
                        help="seconds to wait, once the cars stopped, for the gateway to get all")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="second-broker-") as tmp:
        for i, max_queue in enumerate(args.max_queue or [5000, 1_000_000]):
            result = run(cars=args.cars, rate=args.rate, seconds=args.seconds, max_queue=max_queue,
                         directory=Path(tmp) / f"run{i}", drain_timeout_s=args.drain_timeout)
            print(json.dumps(asdict(result)), flush=True)


if __name__ == "__main__":
    main()
