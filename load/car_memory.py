"""Memory per tracked car: the gateway's per-car in-memory state for N cars, in one process.

    .venv/bin/python -m load.car_memory --cars 1000000
    .venv/bin/python -m load.car_memory --cars 100000 --trace 20000

N cars each say Hello (boot, a random sequence epoch, as a new head unit does) and send
--messages telemetry envelopes, in pipeline-sized batches, through the real per-car classes the
way gateway/pipeline.py drives them: the topic and payload decoded (gateway/decode.py), the
per-car limits (gateway/session/ratelimit.py: Hello and message buckets, evicted once per
batch), the session tracker (sessions, sequence spaces and replay windows, online counts, the
liveness schedule: gateway/session/tracker.py), and the store's table of row versions (the
version of each car's row it last wrote, gateway/store/versions.py). The clock moves as at
--rate messages/s, so a car's token bucket is dropped once it has refilled, as in a running
gateway.

Left out, as they hold nothing per car without entitlements or trouble: the entitlement engine
(indexes only VINs that have entitlements, FoD work or an unacked set), the flood quarantine
(cars refused in the last window), the grace periods (cars whose will arrived), the store's rows
(on disk; SQLite's page cache is bounded).

Reported: RSS after minus RSS before (/proc/self/statm), divided by N: what the cars cost the
process including allocator overhead and fragmentation. With --trace M, a second run of M cars
under tracemalloc lists the top allocation sites (bytes per car), and a walk of the tracked
objects splits the cost by type (objects shared between cars counted once).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import random
import struct
import sys
import time
import tracemalloc
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, fields

from gateway import topics
from gateway.clock import ManualClock
from gateway.decode import Decoded, decode_payload, decode_topic
from gateway.model import VehicleSession
from gateway.session.ratelimit import CarLimits
from gateway.session.tracker import SessionTracker
from gateway.store.versions import KnownVersions
from load import payloads
from load.fleet import COUNTRIES, MODELS, Car

PAGE = os.sysconf("SC_PAGE_SIZE")
BATCH = 2_000  # gateway/pipeline.py MAX_BATCH
MAX_PAYLOAD = 65_536
# The gateway's defaults (gateway/config.py): 100 messages/s, burst 1,000; Hellos 1/s, burst 5.
RATE, BURST, HELLO_RATE, HELLO_BURST = 100.0, 1_000, 1.0, 5
_EPOCH_TAG = b"\x59"  # Envelope.sequence_epoch: field 11, fixed64


def rss_bytes() -> int:
    with open("/proc/self/statm", encoding="ascii") as f:
        return int(f.read().split()[1]) * PAGE


def car(i: int) -> Car:
    """Car `i` of a synthetic fleet of any size (load/fleet.py stops at 900,000 VINs): the same
    models, model years, bearers and home countries, a few hundred software versions."""
    model = MODELS[i % len(MODELS)]
    year = model.first_year + i % (2026 - model.first_year)
    countries = list(COUNTRIES)
    home = countries[i % len(countries)]
    return Car(
        vin=f"WP0ZZZ99Z{i:08d}",
        model=model.name,
        model_year=year,
        bearer=model.bearers[i % len(model.bearers)],
        home_country=home,
        home_mcc=COUNTRIES[home][0],
        software_version=f"{year % 100}.{i % 10}.{i % 41}",
        roaming_enabled=i % 3 != 0,
    )


@dataclass(slots=True)
class Fleet:
    """The per-car state under test and the clock that drives it."""

    tracker: SessionTracker
    limits: CarLimits
    versions: KnownVersions  # the store's: the version of each car's row it last wrote
    clock: ManualClock


def _stream(cars: int, messages: int, seed: int) -> Iterator[list[tuple[str, bytes]]]:
    """Batches of (topic, payload): per chunk of cars a Hello each, then `messages` telemetry
    envelopes each, round robin (the envelopes of one car spread over the chunk's batches)."""
    rng = random.Random(seed)
    for start in range(0, cars, BATCH):
        chunk = [car(i) for i in range(start, min(cars, start + BATCH))]
        epochs = [_EPOCH_TAG + struct.pack("<Q", rng.getrandbits(64) | 1) for _ in chunk]
        # A car has counted for a while: its sequence numbers are ints of their own (above 256).
        first = [rng.randrange(1_000, 10_000_000) for _ in chunk]
        topic = [f"v1/vehicles/{c.vin}/up" for c in chunk]
        yield [
            (topic[k], payloads.hello(c, first[k], connection_id=rng.getrandbits(64), boot=True) + epochs[k])
            for k, c in enumerate(chunk)
        ]
        streams = [payloads.TelemetryStream(c, points=1) for c in chunk]
        for n in range(1, 1 + messages):
            now_ns = time.time_ns()
            yield [(topic[k], s.payload(first[k] + n, now_ns) + epochs[k]) for k, s in enumerate(streams)]


def build(cars: int, messages: int, rate: float, seed: int = 1) -> Fleet:
    """Feed `cars` cars through the per-car state as the pipeline does (see the module doc)."""
    clock = ManualClock(time.time())  # the payloads carry the wall clock (sent_at)
    fleet = Fleet(SessionTracker(), CarLimits(RATE, BURST, HELLO_RATE, HELLO_BURST), KnownVersions(), clock)
    for batch in _stream(cars, messages, seed):
        now = clock.now()
        dirty: dict[str, int] = {}
        for topic, payload in batch:
            parsed = decode_topic(topic)
            assert isinstance(parsed, tuple), parsed
            vin, channel = parsed
            assert channel is topics.Channel.UP
            if not fleet.limits.messages.take(vin, now):
                raise RuntimeError(f"{vin}: refused by its message bucket; lower --rate")
            decoded = decode_payload(vin, channel, payload, MAX_PAYLOAD, now=now)
            assert isinstance(decoded, Decoded), decoded
            if decoded.body == "hello" and not fleet.limits.hellos.take(vin, now):
                raise RuntimeError(f"{vin}: refused by its Hello bucket")
            tracked = fleet.tracker.apply(decoded.envelope, now)
            if tracked.dirty:
                vin = tracked.session.vin
                dirty[vin] = (fleet.versions.expected(vin) or 0) + 1
        # What the store keeps per car after committing the batch (gateway/store/sqlite.py).
        fleet.versions.written(dirty)
        fleet.limits.evict(now)
        clock.advance(len(batch) / rate)
    return fleet


def tree(obj: object, label: str, add: Callable[[object, str], None], depth: int = 2) -> None:
    """`obj` and, `depth` levels down, what it contains (labelled by type and `label`)."""
    add(obj, f"{type(obj).__name__} ({label})")
    if depth == 0:
        return
    if isinstance(obj, dict):
        for key, value in obj.items():
            tree(key, label, add, depth - 1)
            tree(value, label, add, depth - 1)
    elif isinstance(obj, list | tuple | set | frozenset):
        for item in obj:
            tree(item, label, add, depth - 1)


def by_type(fleet: Fleet) -> dict[str, int]:
    """Bytes of the tracked objects by type, each object counted once (shared ones once in
    all): the sessions and their field values, the tracker's dicts, the liveness schedule, the
    token bucket tables."""
    seen: set[int] = set()
    sizes: Counter[str] = Counter()

    def add(obj: object, label: str | None = None) -> None:
        if id(obj) in seen:
            return
        seen.add(id(obj))
        sizes[label or type(obj).__name__] += sys.getsizeof(obj)

    tracker = fleet.tracker
    add(tracker.sessions, "dict (tracker.sessions)")
    names = [f.name for f in fields(VehicleSession)]
    for vin, s in tracker.sessions.items():
        add(vin, "str (vin)")
        add(s)
        for name in names:
            value = getattr(s, name)
            kind = type(value).__name__
            add(value, f"{kind} ({name})" if kind in ("str", "int", "float") else None)
    # The liveness schedule's containers and what they hold, whatever its layout (a measurement
    # of its internals, so that an older layout can be measured with the same file).
    schedule = tracker.liveness
    names = getattr(schedule, "__slots__", None) or list(vars(schedule))
    for name in names:
        tree(getattr(schedule, name), f"liveness {name.lstrip('_')}", add)
    known = fleet.versions._known
    add(known, "dict (store versions)")
    for version in known.values():
        add(version, "int (store version)")
    for buckets in (fleet.limits.messages, fleet.limits.hellos):
        table = buckets._tat
        add(table, "OrderedDict (token buckets)")
        for tat in table.values():
            add(tat, "float (token bucket)")
    return dict(sizes)


def measure(cars: int, messages: int, rate: float) -> dict[str, object]:
    build(min(cars, 1_000), messages, rate, seed=99)  # warm: imports, caches, interned values
    gc.collect()
    before = rss_bytes()
    started = time.perf_counter()
    fleet = build(cars, messages, rate)
    elapsed = time.perf_counter() - started
    gc.collect()
    after = rss_bytes()
    return {
        "cars": cars,
        "messages_per_car": 1 + messages,
        "rss_before_mib": round(before / 2**20, 1),
        "rss_after_mib": round(after / 2**20, 1),
        "bytes_per_car": round((after - before) / cars),
        "buckets_held": len(fleet.limits.messages),
        "seconds": round(elapsed, 1),
        "online": sum(fleet.tracker.online_by_bearer.values()),
    }


def trace(cars: int, messages: int, rate: float, top: int) -> dict[str, object]:
    build(min(cars, 1_000), messages, rate, seed=99)
    gc.collect()
    tracemalloc.start(1)
    base = tracemalloc.take_snapshot()
    fleet = build(cars, messages, rate)
    gc.collect()
    snap = tracemalloc.take_snapshot()
    tracemalloc.stop()
    stats = snap.compare_to(base, "lineno")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    sites = [
        {
            "site": f"{os.path.relpath(str(st.traceback[0].filename), root)}:{st.traceback[0].lineno}",
            "bytes_per_car": round(st.size_diff / cars, 1),
            "blocks_per_car": round(st.count_diff / cars, 2),
        }
        for st in stats[:top]
    ]
    types = sorted(by_type(fleet).items(), key=lambda kv: -kv[1])
    return {
        "cars": cars,
        "traced_bytes_per_car": round(sum(st.size_diff for st in stats) / cars, 1),
        "sites": sites,
        "by_type_bytes_per_car": {k: round(v / cars, 1) for k, v in types},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--cars", type=int, default=100_000)
    parser.add_argument("--messages", type=int, default=3, help="telemetry envelopes per car after its Hello")
    parser.add_argument("--rate", type=float, default=33_000.0, help="messages/s the clock moves at")
    parser.add_argument("--trace", type=int, default=0, metavar="M", help="also trace M cars (tracemalloc)")
    parser.add_argument("--top", type=int, default=12)
    parser.add_argument("--json", action="store_true", help="one JSON object instead of text")
    args = parser.parse_args(argv)
    if args.cars < 1 or args.messages < 0 or not args.rate > 0:
        parser.error("--cars >= 1, --messages >= 0, --rate > 0")
    result: dict[str, object] = {"rss": measure(args.cars, args.messages, args.rate)}
    if args.trace:
        result["trace"] = trace(args.trace, args.messages, args.rate, args.top)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    r = result["rss"]
    assert isinstance(r, dict)
    print(f"{r['cars']:,} cars, {r['messages_per_car']} messages each, {r['seconds']} s: "
          f"RSS {r['rss_before_mib']} -> {r['rss_after_mib']} MiB = {r['bytes_per_car']} bytes per car "
          f"({r['online']:,} online, {r['buckets_held']:,} message buckets held)")
    t = result.get("trace")
    if isinstance(t, dict):
        print(f"\ntracemalloc, {t['cars']:,} cars: {t['traced_bytes_per_car']} bytes per car traced")
        for site in t["sites"]:
            per_car = f"{site['bytes_per_car']:>8} B/car {site['blocks_per_car']:>6} blocks/car"
            print(f"  {per_car}  {site['site']}")
        print("\nby type (bytes per car, shared objects once):")
        for name, size in t["by_type_bytes_per_car"].items():
            print(f"  {size:>8}  {name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
