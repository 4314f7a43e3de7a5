"""One load-generator worker process: an asyncio loop holding thousands of raw MQTT 5
connections (one per car, client id = VIN, with a last will) and writing pre-encoded frames.

The parent (``load.generator.Generator``) sends commands over a pipe; the worker answers each
with a stats dict and updates shared counters (sent, connected, ...) for live progress.

Downlinks: with ``subscribe=True`` a car subscribes to its downlink topic right after CONNACK
(before its Hello, so nothing the Hello triggers can be missed) and acknowledges every
EntitlementSet as a head unit does (an EntitlementAck of the whole set, R13). After ``watch``
the worker also times, per car, its boot Hello -> the first set holding the watched service
(``set_report``): the restart storm's boot -> entitlement set latency, measured at the car.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import resource
import socket
import struct
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any, cast

from gateway import topics
from gateway._gen.telematics.v1 import downlink_pb2
from load import frames, payloads
from load.fleet import Car

SENT, HELLOS, CONNECTED, ERRORS, ACKED, SETS = range(6)
SLOTS = 6
_LINGER_RST = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s: close with RST (a lost link)


@dataclass(frozen=True, slots=True)
class WorkerSpec:
    index: int
    host: str
    port: int
    source_ip: str  # bind connections to this loopback address ("" = any)
    cars: list[Car]
    keepalive: int = 600
    seed: int = 1
    connect_timeout: float = 30.0


class CarConn(asyncio.Protocol):
    """The socket side of one car: reads CONNACK/PUBACK/DISCONNECT, tracks write pressure."""

    def __init__(self, worker: Worker, cs: CarState) -> None:
        self.worker = worker
        self.cs = cs
        self.transport: asyncio.Transport | None = None
        self.reader = frames.FrameReader()
        self.connack: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.inflight = 0
        self.next_pid = 0
        # packet id -> the telemetry sequence it carries (QoS 1): which messages the broker
        # acknowledged, for the overload bench's loss check (load/overload.py).
        self.sequences: dict[int, int] = {}
        self.writable = asyncio.Event()
        self.writable.set()
        self.acks = asyncio.Event()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        for p in self.reader.feed(data):
            if p.kind == frames.PUBACK:
                self.inflight -= 1
                self.worker.acked += 1
                seq = self.sequences.pop(p.packet_id, 0)
                if seq and p.reason_code < 0x80:
                    self.cs.acked.append(seq)
                self.acks.set()
            elif p.kind == frames.CONNACK:
                if not self.connack.done():
                    self.connack.set_result(p.reason_code)
            elif p.kind == frames.PUBLISH:  # a downlink: acknowledge it, answer a set
                now = time.perf_counter()  # before decoding: the latency is the broker's and gateway's
                _, pid, payload = frames.parse_publish(p)
                if pid and self.transport is not None:
                    self.transport.write(frames.puback(pid))
                self.worker.on_downlink(self, payload, now)
            elif p.kind == frames.SUBACK:
                if p.body and p.body[-1] >= 0x80:  # the one filter's reason code
                    self.worker.note_error(f"SUBACK reason 0x{p.body[-1]:02x}")
            elif p.kind == frames.DISCONNECT:
                self.worker.note_error(f"broker sent DISCONNECT reason 0x{p.reason_code:02x}")

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.connack.done():
            self.connack.set_exception(ConnectionError(str(exc) if exc else "closed before CONNACK"))
        if not self.closed.done():
            self.closed.set_result(None)
        self.writable.set()
        self.acks.set()
        self.worker.on_lost(self)

    def pause_writing(self) -> None:
        self.writable.clear()

    def resume_writing(self) -> None:
        self.writable.set()

    def packet_id(self, sequence: int = 0) -> int:
        self.next_pid = self.next_pid % 0xFFFF + 1
        self.inflight += 1
        if sequence:
            self.sequences[self.next_pid] = sequence
        return self.next_pid

    @property
    def live(self) -> bool:
        return self.transport is not None and not self.closed.done()


def runs(values: list[int]) -> list[list[int]]:
    """Sorted distinct values as [first, last] runs of consecutive numbers."""
    out: list[list[int]] = []
    for v in sorted(set(values)):
        if out and v == out[-1][1] + 1:
            out[-1][1] = v
        else:
            out.append([v, v])
    return out


class CarState:
    __slots__ = ("acked", "boot_at", "car", "conn", "connection_id", "seq", "set_ms", "stream", "tmpl0",
                 "tmpl1", "topic")

    def __init__(self, car: Car) -> None:
        self.car = car
        self.seq = 0  # increases for the car's whole life, across connections
        self.acked: list[int] = []  # telemetry sequences the broker acknowledged (QoS 1)
        self.conn: CarConn | None = None
        self.connection_id = 0
        self.topic = topics.uplink(car.vin)
        self.tmpl0 = frames.PublishTemplate(self.topic, 0)
        self.tmpl1 = frames.PublishTemplate(self.topic, 1)
        self.stream: payloads.TelemetryStream | None = None
        self.boot_at = 0.0  # perf_counter of the watched boot Hello; 0: none sent while watching
        self.set_ms = -1.0  # that boot -> the first set holding the watched service; -1: none yet


class Worker:
    def __init__(self, spec: WorkerSpec, pipe: Connection, counters: Any) -> None:
        self.spec = spec
        self.pipe = pipe
        self.counters = counters
        self.base = spec.index * SLOTS
        self.cars = [CarState(c) for c in spec.cars]
        self.rng = random.Random(f"worker:{spec.seed}:{spec.index}")
        self.connected = 0
        self.acked = 0
        self.errors: list[str] = []
        self.error_count = 0
        self.watched = ""  # service id whose arrival in an entitlement set is timed ("": off)
        self.watched_vins: frozenset[str] = frozenset()  # the cars granted it
        self.sets_received = 0
        # Sets a car got before its watched boot (also before `watch`: during the grants). The
        # restart storm grants services only, which wait for the restart (R13): must stay 0.
        self.early_sets = 0
        self.bad_downlinks = 0

    # -- bookkeeping --
    def note_error(self, msg: str) -> None:
        self.error_count += 1
        self.counters[self.base + ERRORS] = self.error_count
        if len(self.errors) < 10:
            self.errors.append(msg)

    def on_lost(self, conn: CarConn) -> None:
        if conn.cs.conn is conn:
            conn.cs.conn = None
            self.connected -= 1
            self.counters[self.base + CONNECTED] = self.connected

    def _count(self, slot: int, n: int = 1) -> None:
        self.counters[self.base + slot] += n

    # -- downlinks --
    def on_downlink(self, conn: CarConn, payload: bytes, now: float) -> None:
        """A Downlink PUBLISH for the car of ``conn``: ack an EntitlementSet (QoS 1 uplink) and,
        while watching, time the car's boot -> first set holding the watched service."""
        down = downlink_pb2.Downlink()
        try:
            down.ParseFromString(payload)
        except Exception:  # protobuf's DecodeError; the generator only counts it
            self.bad_downlinks += 1
            return
        if down.WhichOneof("body") != "entitlement_set":
            return
        cs = conn.cs
        eset = down.entitlement_set
        self.sets_received += 1
        if not cs.boot_at:
            self.early_sets += 1
        elif cs.set_ms < 0 and any(item.service_id == self.watched for item in eset.items):
            cs.set_ms = (now - cs.boot_at) * 1000
            self._count(SETS)
        if conn.transport is not None and not conn.closed.done():
            cs.seq += 1
            ids = [item.entitlement_id for item in eset.items]
            ack = payloads.entitlement_ack(cs.car, cs.seq, eset.version, ids)
            conn.transport.write(cs.tmpl1.frame(ack, conn.packet_id()))

    async def watch(self, service: str, vins: list[str]) -> dict[str, Any]:
        """From now on time the next boot Hello of each car in ``vins`` -> its first set holding
        ``service``."""
        self.watched = service
        self.watched_vins = frozenset(vins)
        self.counters[self.base + SETS] = 0
        for cs in self.cars:
            cs.boot_at, cs.set_ms = 0.0, -1.0
        return {}

    async def set_report(self) -> dict[str, Any]:
        booted = [cs for cs in self.cars if cs.boot_at]
        return {
            "watched": sum(1 for cs in self.cars if cs.car.vin in self.watched_vins),
            "booted": len(booted),
            "latencies_ms": [round(cs.set_ms, 3) for cs in booted if cs.set_ms >= 0],
            "missed_vins": [cs.car.vin for cs in booted if cs.set_ms < 0][:20],
            "early_sets": self.early_sets,
            "sets_received": self.sets_received,
            "bad_downlinks": self.bad_downlinks,
        }

    # -- connections --
    async def connect_car(self, cs: CarState, *, boot: bool, delay: float, sem: asyncio.Semaphore,
                          subscribe: bool = False) -> float:
        """Open the connection, CONNECT with will, wait for CONNACK, (SUBSCRIBE to the downlink,)
        send the Hello. Seconds taken."""
        if delay:
            await asyncio.sleep(delay)
        async with sem:
            loop = asyncio.get_running_loop()
            started = time.perf_counter()
            local = (self.spec.source_ip, 0) if self.spec.source_ip else None
            try:
                _, conn = await loop.create_connection(
                    lambda: CarConn(self, cs), self.spec.host, self.spec.port, local_addr=local
                )
            except OSError as exc:
                self.note_error(f"connect: {exc}")
                return -1.0
            cs.connection_id = self.rng.getrandbits(64)
            will = frames.Will(topics.will(cs.car.vin), payloads.last_will(cs.car, cs.connection_id), qos=1)
            assert conn.transport is not None
            conn.transport.write(frames.connect(cs.car.vin, keepalive=self.spec.keepalive, will=will))
            try:
                rc = await asyncio.wait_for(conn.connack, self.spec.connect_timeout)
            except (TimeoutError, ConnectionError) as exc:
                self.note_error(f"CONNACK: {exc or 'timeout'}")
                conn.transport.abort()
                return -1.0
            if rc != 0:
                self.note_error(f"CONNACK reason 0x{rc:02x}")
                conn.transport.close()
                return -1.0
            cs.conn = conn
            self.connected += 1
            self.counters[self.base + CONNECTED] = self.connected
            if subscribe:  # same socket, before the Hello: the broker applies it first
                conn.next_pid = conn.next_pid % 0xFFFF + 1
                conn.transport.write(frames.subscribe(conn.next_pid, topics.downlink(cs.car.vin), qos=1))
            cs.seq += 1
            hello = payloads.hello(cs.car, cs.seq, cs.connection_id, boot=boot)
            if boot and self.watched and cs.car.vin in self.watched_vins:
                cs.boot_at = time.perf_counter()
            conn.transport.write(cs.tmpl1.frame(hello, conn.packet_id()))
            self._count(HELLOS)
            return time.perf_counter() - started

    async def connect(
        self, boot: bool = False, window_s: float = 0.0, concurrency: int = 64, subscribe: bool = False
    ) -> dict[str, Any]:
        sem = asyncio.Semaphore(concurrency)
        todo = [cs for cs in self.cars if cs.conn is None]
        started = time.perf_counter()
        took = await asyncio.gather(
            *(
                self.connect_car(cs, boot=boot, delay=self.rng.uniform(0, window_s) if window_s else 0.0,
                                 sem=sem, subscribe=subscribe)
                for cs in todo
            )
        )
        ok = sorted(t for t in took if t >= 0)
        return {
            "attempted": len(todo),
            "connected": len(ok),
            "duration_s": time.perf_counter() - started,
            "connect_ms": [round(t * 1000, 3) for t in ok[:: max(1, len(ok) // 200)]],
        }

    async def drop(self) -> dict[str, Any]:
        """Every car loses its link: the socket closes with RST, no DISCONNECT (the wills fire)."""
        conns = [cs.conn for cs in self.cars if cs.conn is not None]
        for conn in conns:
            assert conn.transport is not None
            sock = conn.transport.get_extra_info("socket")
            with contextlib.suppress(OSError, AttributeError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RST)
            conn.transport.abort()
        await self._closed(conns)
        return {"dropped": len(conns)}

    async def disconnect(self, goodbye: bool = True) -> dict[str, Any]:
        """Orderly: Goodbye (optional), DISCONNECT, close. No will."""
        conns: list[CarConn] = []
        for cs in self.cars:
            if cs.conn is not None and cs.conn.transport is not None:
                if goodbye:
                    cs.seq += 1
                    cs.conn.transport.write(cs.tmpl0.frame(payloads.goodbye(cs.car, cs.seq)))
                cs.conn.transport.write(frames.DISCONNECT_NORMAL)
                cs.conn.transport.close()
                conns.append(cs.conn)
        await self._closed(conns)
        return {"disconnected": len(conns)}

    async def _closed(self, conns: list[CarConn], timeout: float = 30.0) -> None:
        if conns:
            await asyncio.wait([c.closed for c in conns], timeout=timeout)

    async def restart(self, window_s: float = 10.0, concurrency: int = 64, subscribe: bool = False
                      ) -> dict[str, Any]:
        """Every car's head unit restarts once within the window: Goodbye, then a boot Hello."""
        sem = asyncio.Semaphore(concurrency)

        async def one(cs: CarState) -> float:
            await asyncio.sleep(self.rng.uniform(0, window_s))
            conn = cs.conn
            if conn is not None and conn.transport is not None:
                cs.seq += 1
                transport = conn.transport
                transport.write(cs.tmpl0.frame(payloads.goodbye(cs.car, cs.seq, "head unit restart")))
                transport.write(frames.DISCONNECT_NORMAL)
                transport.close()
                await asyncio.wait([conn.closed], timeout=30)
            return await self.connect_car(cs, boot=True, delay=0.0, sem=sem, subscribe=subscribe)

        started = time.perf_counter()
        took = await asyncio.gather(*(one(cs) for cs in self.cars))
        return {"restarted": sum(1 for t in took if t >= 0), "duration_s": time.perf_counter() - started}

    # -- telemetry --
    async def steady(
        self, messages: int, rate: float = 0.0, qos: int = 0, start_at: float = 0.0,
        duration_s: float = 0.0, max_inflight: int = 64, points: int = 4, burst: int = 1, samples: int = 1,
        report_acked: bool = False,
    ) -> dict[str, Any]:
        """Send ``messages`` telemetry envelopes round-robin over the live connections at
        ``rate`` per second (0: as fast as the sockets take them), stopping early after
        ``duration_s`` when given. QoS 1 waits for PUBACKs beyond ``max_inflight`` per car.
        ``report_acked``: the reply has ``acked``, per VIN the acknowledged sequences as
        [first, last] runs (load/overload.py checks each of them reached the consumer)."""
        live = [cs for cs in self.cars if cs.conn is not None]
        for cs in live:
            if cs.stream is None:
                cs.stream = payloads.TelemetryStream(cs.car, points, self.spec.seed, samples)
        if start_at:
            await asyncio.sleep(max(0.0, start_at - time.time()))
        first = time.time()
        t0 = time.perf_counter()
        sent, i, reported = 0, 0, 0
        time_ns = time.time_ns
        while sent < messages and live:
            if rate:
                target = min(messages, int((time.perf_counter() - t0) * rate) + 1)
            else:
                target = min(messages, sent + 256)
            while sent < target and live:
                if i >= len(live):
                    i = 0
                cs = live[i]
                conn = cs.conn
                if conn is None or not conn.live:
                    live.pop(i)
                    continue
                i += 1
                if not conn.writable.is_set():
                    await conn.writable.wait()
                assert cs.stream is not None and conn.transport is not None
                n = min(burst, target - sent)
                if qos:
                    while conn.inflight + n > max_inflight and conn.live:
                        conn.acks.clear()
                        await conn.acks.wait()
                if n == 1:
                    cs.seq += 1
                    payload = cs.stream.payload(cs.seq, time_ns())
                    conn.transport.write(
                        cs.tmpl1.frame(payload, conn.packet_id(cs.seq)) if qos else cs.tmpl0.frame(payload)
                    )
                else:
                    chunk = []
                    for _ in range(n):
                        cs.seq += 1
                        payload = cs.stream.payload(cs.seq, time_ns())
                        if qos:
                            chunk.append(cs.tmpl1.frame(payload, conn.packet_id(cs.seq)))
                        else:
                            chunk.append(cs.tmpl0.frame(payload))
                    conn.transport.write(b"".join(chunk))
                sent += n
            self.counters[self.base + SENT] += sent - reported
            self.counters[self.base + ACKED] = self.acked
            reported = sent
            if duration_s and time.perf_counter() - t0 >= duration_s:
                break
            await asyncio.sleep(0.002 if rate else 0)
        last = time.time()
        if qos:  # wait (bounded) for the broker to acknowledge what we sent
            deadline = time.perf_counter() + 30
            for cs in live:
                c = cs.conn
                while c is not None and c.live and c.inflight > 0 and time.perf_counter() < deadline:
                    c.acks.clear()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(c.acks.wait(), max(0.0, deadline - time.perf_counter()))
        self.counters[self.base + ACKED] = self.acked
        out: dict[str, Any] = {"sent": sent, "first_send": first, "last_send": last, "live": len(live)}
        if report_acked:
            out["acked"] = {cs.car.vin: runs(cs.acked) for cs in self.cars if cs.acked}
        return out

    async def ping(self) -> dict[str, Any]:
        return {}

    async def keepalive(self) -> None:
        while True:
            await asyncio.sleep(max(1.0, self.spec.keepalive / 2))
            for cs in self.cars:
                if cs.conn is not None and cs.conn.transport is not None:
                    cs.conn.transport.write(frames.PINGREQ)

    # -- command loop --
    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        commands: asyncio.Queue[tuple[str, dict[str, Any]]] = asyncio.Queue()

        def readable() -> None:
            try:
                # add_reader made the pipe non-blocking: a command bigger than the pipe's buffer
                # (the restart storm's VIN list) would be read half and fail; block until whole.
                os.set_blocking(self.pipe.fileno(), True)
                commands.put_nowait(self.pipe.recv())
            except EOFError:
                commands.put_nowait(("stop", {}))
                loop.remove_reader(self.pipe.fileno())

        loop.add_reader(self.pipe.fileno(), readable)
        os.set_blocking(self.pipe.fileno(), True)  # replies (latency lists) may exceed the buffer too
        pinger = asyncio.create_task(self.keepalive())
        handlers: dict[str, Callable[..., Awaitable[dict[str, Any]]]] = {
            "connect": self.connect, "drop": self.drop, "disconnect": self.disconnect,
            "restart": self.restart, "steady": self.steady, "ping": self.ping, "watch": self.watch,
            "set_report": self.set_report,
        }
        while True:
            name, kwargs = await commands.get()
            if name == "stop":
                pinger.cancel()
                with contextlib.suppress(Exception):
                    await self.drop()
                self.pipe.send({"cmd": "stop", "worker": self.spec.index, "ok": True})
                return
            try:
                result = await handlers[name](**kwargs)
                result.update(ok=True)
            except Exception as exc:  # report, keep serving commands
                result = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
            result.update(cmd=name, worker=self.spec.index, errors=self.errors[:],
                          error_count=self.error_count, connected_now=self.connected)
            self.pipe.send(result)


def worker_main(spec: WorkerSpec, pipe: Connection, counters: Any) -> None:
    """Process entry point (spawned)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    try:
        import uvloop

        runner: Any = uvloop.run
    except ImportError:  # pragma: no cover - uvloop is a gateway dependency
        runner = asyncio.run
    runner(Worker(spec, pipe, counters).run())
