"""The load generator: many concurrent raw MQTT 5 connections spread over worker processes.

This machine caps open files at 20,000 per process, so connections are spread over several
worker processes (e.g. 4 x 4,000), each binding its sockets to its own loopback source address
(127.0.0.2, 127.0.0.3, ...) so ephemeral ports never run short, even with TIME_WAITs left by
a reconnect storm. Loopback only.

Used by ``load.bench`` and on its own:

    python -m load.generator --port 18830 --cars 1000 --messages 200000            # steady
    python -m load.generator --port 18830 --cars 15000 --workers 4 --scenario reconnect_storm
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing as mp
import sys
import time
from multiprocessing.connection import Connection
from typing import Any

from load.fleet import Car, generate_fleet, split
from load.worker import ACKED, CONNECTED, ERRORS, HELLOS, SENT, SETS, SLOTS, WorkerSpec, worker_main

SCENARIOS = ("steady", "connections", "reconnect_storm", "restart_storm")


def source_ips(workers: int, group: int = 0) -> list[str]:
    """Distinct loopback addresses per worker; ``group`` gives a fresh set (e.g. per run)."""
    return [f"127.{1 + group % 250}.{w // 250}.{2 + w % 250}" for w in range(workers)]


class GeneratorError(Exception):
    """A worker failed or did not answer."""


class Generator:
    """Worker processes holding the cars' connections; commands go to all workers at once."""

    def __init__(
        self,
        cars: list[Car],
        *,
        host: str = "127.0.0.1",
        port: int,
        workers: int = 4,
        ips: list[str] | None = None,
        keepalive: int = 600,
        seed: int = 1,
    ) -> None:
        if host not in ("127.0.0.1", "localhost", "::1"):
            raise ValueError("the load generator targets loopback only")
        self.cars = cars
        self.workers = max(1, min(workers, len(cars) or 1))
        ips = ips if ips is not None else source_ips(self.workers)
        ctx = mp.get_context("spawn")
        self.counters = ctx.Array("q", SLOTS * self.workers, lock=False)
        self.slices = split(cars, self.workers)
        self._pipes: list[Connection] = []
        self._procs: list[Any] = []
        for i, part in enumerate(self.slices):
            parent, child = ctx.Pipe()
            spec = WorkerSpec(i, host, port, ips[i % len(ips)] if ips else "", part, keepalive, seed)
            proc = ctx.Process(target=worker_main, args=(spec, child, self.counters), daemon=True,
                               name=f"load-worker-{i}")
            self._pipes.append(parent)
            self._procs.append(proc)
        self._pending: dict[int, dict[str, Any]] | None = None
        self.last_replies: list[dict[str, Any]] | None = None

    def start(self) -> None:
        for p in self._procs:
            p.start()

    def __enter__(self) -> Generator:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- counters (live progress) --
    def total(self, slot: int) -> int:
        return sum(self.counters[w * SLOTS + slot] for w in range(self.workers))

    @property
    def sent(self) -> int:
        return self.total(SENT)

    @property
    def hellos(self) -> int:
        return self.total(HELLOS)

    @property
    def connected(self) -> int:
        return self.total(CONNECTED)

    @property
    def errors(self) -> int:
        return self.total(ERRORS)

    @property
    def acked(self) -> int:
        return self.total(ACKED)

    @property
    def sets(self) -> int:
        """Cars that got the watched service's entitlement set after their watched boot."""
        return self.total(SETS)

    # -- commands --
    def send(self, cmd: str, per_worker: list[dict[str, Any]] | None = None, **kwargs: Any) -> None:
        """Start ``cmd`` on every worker (``per_worker`` overrides kwargs per worker)."""
        if self._pending is not None:
            raise GeneratorError("previous command still running")
        for i, pipe in enumerate(self._pipes):
            pipe.send((cmd, {**kwargs, **(per_worker[i] if per_worker else {})}))
        self._pending = {}

    def poll(self) -> list[dict[str, Any]] | None:
        """The replies of every worker once all answered, else None (non-blocking)."""
        if self._pending is None:
            raise GeneratorError("no command running")
        for i, pipe in enumerate(self._pipes):
            if i not in self._pending and pipe.poll():
                self._pending[i] = pipe.recv()
        for i, proc in enumerate(self._procs):
            if i not in self._pending and not proc.is_alive():
                raise GeneratorError(f"worker {i} died with exit code {proc.exitcode}")
        if len(self._pending) < len(self._pipes):
            return None
        replies = [self._pending[i] for i in range(len(self._pipes))]
        self._pending = None
        self.last_replies = replies
        failed = [r for r in replies if not r.get("ok")]
        if failed:
            raise GeneratorError(f"{failed[0].get('cmd')} failed: {failed[0].get('error')}")
        return replies

    def wait(self, timeout: float = 600.0) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while True:
            replies = self.poll()
            if replies is not None:
                return replies
            if time.monotonic() > deadline:
                raise GeneratorError(f"workers did not answer within {timeout}s")
            time.sleep(0.01)

    def run(self, cmd: str, timeout: float = 600.0, **kwargs: Any) -> list[dict[str, Any]]:
        self.send(cmd, **kwargs)
        return self.wait(timeout)

    def split_messages(self, messages: int) -> list[dict[str, Any]]:
        """Per-worker message counts proportional to their cars (sums to ``messages``)."""
        total = max(1, len(self.cars))
        counts = [messages * len(part) // total for part in self.slices]
        counts[0] += messages - sum(counts)
        return [{"messages": n} for n in counts]

    def close(self, timeout: float = 30.0) -> None:
        if self._pending is not None:  # abandon a running command
            self._pending = None
        for pipe in self._pipes:
            with contextlib.suppress(BrokenPipeError, OSError):
                pipe.send(("stop", {}))
        for p in self._procs:
            p.join(timeout)
            if p.is_alive():
                p.kill()
                p.join()
        for pipe in self._pipes:
            pipe.close()


def _wait_connected(gen: Generator, want: int, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while gen.connected < want and time.monotonic() < deadline:
        time.sleep(0.05)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m load.generator", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--port", type=int, required=True, help="broker port on 127.0.0.1")
    ap.add_argument("--cars", type=int, default=1000)
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--scenario", choices=SCENARIOS, default="steady")
    ap.add_argument("--messages", type=int, default=100_000, help="steady: telemetry envelopes in total")
    ap.add_argument("--rate", type=float, default=0.0, help="steady: messages/s in total, 0 = max")
    ap.add_argument("--duration", type=float, default=0.0, help="steady: stop after this many seconds")
    ap.add_argument("--qos", type=int, choices=(0, 1), default=0)
    ap.add_argument("--burst", type=int, default=1, help="steady: envelopes per car per socket write")
    ap.add_argument("--window", type=float, default=10.0, help="restart_storm: boots spread over this")
    ap.add_argument("--concurrency", type=int, default=64, help="connects in flight per worker")
    ap.add_argument("--unclean", action="store_true", help="connections: drop links instead of goodbye")
    args = ap.parse_args(argv)

    cars = generate_fleet(args.cars, args.seed)
    report: dict[str, Any] = {"scenario": args.scenario, "cars": len(cars)}
    with Generator(cars, port=args.port, workers=args.workers, seed=args.seed) as gen:
        t = time.monotonic()
        gen.run("connect", boot=True, concurrency=args.concurrency)
        report["connect_s"] = round(time.monotonic() - t, 3)
        report["connected"] = gen.connected
        if args.scenario == "steady":
            per = gen.split_messages(args.messages)
            rate = args.rate / gen.workers
            gen.send("steady", per_worker=per, rate=rate, qos=args.qos, start_at=time.time() + 0.2,
                     duration_s=args.duration, burst=args.burst)
            replies = gen.wait()
            first = min(r["first_send"] for r in replies)
            last = max(r["last_send"] for r in replies)
            sent = sum(r["sent"] for r in replies)
            report.update(sent=sent, send_s=round(last - first, 3),
                          send_rate=round(sent / max(last - first, 1e-9)))
        elif args.scenario == "reconnect_storm":
            t = time.monotonic()
            gen.run("drop")
            gen.run("connect", boot=False, concurrency=args.concurrency)
            report["storm_s"] = round(time.monotonic() - t, 3)
        elif args.scenario == "restart_storm":
            t = time.monotonic()
            gen.run("restart", window_s=args.window, concurrency=args.concurrency)
            report["storm_s"] = round(time.monotonic() - t, 3)
        _wait_connected(gen, len(cars), 1.0)
        t = time.monotonic()
        if args.unclean:
            gen.run("drop")
        else:
            gen.run("disconnect", goodbye=True)
        report["disconnect_s"] = round(time.monotonic() - t, 3)
        report["errors"] = gen.errors
    print(json.dumps(report))
    return 0 if not report["errors"] else 1


if __name__ == "__main__":
    sys.exit(main())
