"""Backend-side consumers for the benchmark, each run in its own process.

* ``sink_main``: a tiny gRPC server standing in for a backend of the naive pipeline. It takes
  one ``telematics.v1.TelemetryRecord`` per gRPC message (``Put``: one unary call per record;
  ``PutStream``: a client stream, one message per record). Registered with generic handlers,
  so no .proto is added to the contract.
* ``subscriber_main``: a SubscribeTelemetry client of the gateway.

Both count records in a shared counter (live progress) and measure each record's end-to-end
latency (receipt time - the envelope's sent_at). On ``stop`` (or at ``expect`` records) they
send their stats back over the pipe.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from multiprocessing.connection import Connection
from typing import Any

import grpc

from gateway._gen.telematics.v1 import telemetry_pb2, telemetry_pb2_grpc
from gateway.api.client import bearer_metadata
from load.stats import Latencies

SINK_SERVICE = "load.v1.RecordSink"
PUT = f"/{SINK_SERVICE}/Put"
PUT_STREAM = f"/{SINK_SERVICE}/PutStream"
Record = telemetry_pb2.TelemetryRecord


def empty_bytes(_: object) -> bytes:
    return b""  # google.protobuf.Empty serialized


def ignore_bytes(_: bytes) -> None:
    return None


class Tally:
    """Record count and latencies; ``take`` is called per record or per batch."""

    def __init__(self, counter: Any) -> None:
        self.counter = counter
        self.latencies = Latencies()
        self.count = 0
        self.first = 0.0
        self.last = 0.0
        self.messages = 0  # gRPC messages carrying the records

    def take(self, records: Any, now_ns: int) -> None:
        add = self.latencies.values.append
        for r in records:
            ts = r.sent_at
            add((now_ns - ts.seconds * 1_000_000_000 - ts.nanos) / 1e6)
        n = len(records)
        self.count += n
        self.messages += 1
        self.last = now_ns / 1e9
        if not self.first:
            self.first = self.last
        self.counter.value = self.count

    def stats(self, **extra: Any) -> dict[str, Any]:
        return {
            "records": self.count,
            "grpc_messages": self.messages,
            "first_record_at": self.first,
            "last_record_at": self.last,
            "latency": self.latencies.summary(),
            **extra,
        }


# -- naive backend: a gRPC server taking one record per message --
async def _serve(counter: Any, pipe: Connection) -> None:
    tally = Tally(counter)

    async def put(request: Record, context: grpc.aio.ServicerContext) -> None:
        tally.take((request,), time.time_ns())

    async def put_stream(requests: Any, context: grpc.aio.ServicerContext) -> None:
        async for request in requests:
            tally.take((request,), time.time_ns())

    handler = grpc.method_handlers_generic_handler(
        SINK_SERVICE,
        {
            "Put": grpc.unary_unary_rpc_method_handler(
                put, request_deserializer=Record.FromString, response_serializer=empty_bytes
            ),
            "PutStream": grpc.stream_unary_rpc_method_handler(
                put_stream, request_deserializer=Record.FromString, response_serializer=empty_bytes
            ),
        },
    )
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_reader(pipe.fileno(), stop.set)
    pipe.send({"ready": True, "port": port})
    await stop.wait()
    loop.remove_reader(pipe.fileno())
    with contextlib.suppress(EOFError):
        pipe.recv()
    await server.stop(0)
    pipe.send(tally.stats())


def sink_main(counter: Any, pipe: Connection) -> None:
    """Process entry: serve until the parent sends anything, then report."""
    asyncio.run(_serve(counter, pipe))


# -- the gateway's consumer: one SubscribeTelemetry stream --
def subscriber_main(target: str, counter: Any, pipe: Connection, expect: int = 0, token: str = "",
                    raw: bool = False, track: bool = False) -> None:
    """Process entry: subscribe and count until ``expect`` records or a ``stop`` from the parent.
    ``raw``: the stats also carry every latency (``latencies_ms``, float64 bytes), so the parent
    can merge several streams' percentiles exactly (load/fleet_sink.py). ``track``: they also
    carry, per VIN, the distinct sequences received as [first, last] runs (``sequences``) and
    how many records came again (``duplicates``), to check QoS 1 loss (load/overload.py)."""
    from load.worker import runs

    tally = Tally(counter)
    seen: dict[str, set[int]] = {}
    duplicates = 0
    channel = grpc.insecure_channel(target, options=[("grpc.max_receive_message_length", 64 << 20)])
    stub = telemetry_pb2_grpc.TelemetryServiceStub(channel)
    call = stub.SubscribeTelemetry(telemetry_pb2.SubscribeTelemetryRequest(),
                                   metadata=bearer_metadata(token) if token else None)
    error = ""

    def watch() -> None:
        with contextlib.suppress(EOFError, OSError):
            pipe.recv()
        call.cancel()

    threading.Thread(target=watch, daemon=True).start()
    pipe.send({"ready": True})
    try:
        for batch in call:
            if track:
                for r in batch.records:
                    got = seen.setdefault(r.vin, set())
                    duplicates += r.sequence in got
                    got.add(r.sequence)
            tally.take(batch.records, time.time_ns())
            if expect and tally.count >= expect:
                call.cancel()
                break
    except grpc.RpcError as exc:
        if exc.code() != grpc.StatusCode.CANCELLED:
            error = f"{exc.code().name}: {exc.details()}"
    channel.close()
    extra: dict[str, Any] = {"latencies_ms": tally.latencies.values.tobytes()} if raw else {}
    if track:
        extra.update(duplicates=duplicates, sequences={vin: runs(list(s)) for vin, s in seen.items()})
    pipe.send(tally.stats(error=error, **extra))
