"""The naive baseline the gateway is compared with: the documented aiomqtt loop
(``async for message in client.messages``), a protobuf decode per message, and one gRPC
message per telemetry record to a backend in another process (``load.consumer.sink_main``):
a client stream (default) or one awaited unary call per record. No batching anywhere.

Runs in its own process (``naive_main``) so its CPU can be measured on its own.
"""

from __future__ import annotations

import asyncio
import contextlib
from multiprocessing.connection import Connection
from typing import Any

import aiomqtt
import grpc

from gateway import topics
from gateway._gen.telematics.v1 import telemetry_pb2, uplink_pb2
from load.consumer import PUT, PUT_STREAM, ignore_bytes

Record = telemetry_pb2.TelemetryRecord


async def _run(
    mqtt_port: int, username: str, password: str, sink_port: int, mode: str, counter: Any, pipe: Connection
) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    received = 0
    forwarded = 0
    error = ""
    async with grpc.aio.insecure_channel(f"127.0.0.1:{sink_port}") as channel:
        put = channel.unary_unary(PUT, request_serializer=Record.SerializeToString,
                                  response_deserializer=ignore_bytes)
        put_stream = channel.stream_unary(PUT_STREAM, request_serializer=Record.SerializeToString,
                                          response_deserializer=ignore_bytes)
        stream_call = put_stream() if mode == "stream" else None
        client = aiomqtt.Client(
            "127.0.0.1", mqtt_port, identifier="naive-baseline", username=username, password=password,
            protocol=aiomqtt.ProtocolVersion.V5, keepalive=60,
        )

        async def consume() -> None:
            nonlocal received, forwarded
            async for message in client.messages:
                received += 1
                counter.value = received
                env = uplink_pb2.Envelope.FromString(message.payload)
                if env.WhichOneof("body") != "telemetry":
                    continue
                for sample in env.telemetry.samples:
                    rec = Record(vin=env.vin, sequence=env.sequence, service=env.telemetry.service,
                                 sample=sample)
                    rec.sent_at.CopyFrom(env.sent_at)
                    if stream_call is not None:
                        await stream_call.write(rec)
                    else:
                        await put(rec)
                    forwarded += 1

        async with client:
            await client.subscribe(topics.UPLINK_FILTER, qos=1)
            loop.add_reader(pipe.fileno(), stop.set)
            pipe.send({"ready": True})
            task = asyncio.create_task(consume())
            stopper = asyncio.create_task(stop.wait())
            await asyncio.wait([task, stopper], return_when=asyncio.FIRST_COMPLETED)
            loop.remove_reader(pipe.fileno())
            if task.done() and task.exception() is not None:
                error = repr(task.exception())
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if stream_call is not None:
            with contextlib.suppress(grpc.RpcError):
                await stream_call.done_writing()
                await stream_call
    with contextlib.suppress(EOFError):
        pipe.recv()
    pipe.send({"mqtt_messages": received, "forwarded": forwarded, "error": error})


def naive_main(
    mqtt_port: int, username: str, password: str, sink_port: int, mode: str, counter: Any, pipe: Connection
) -> None:
    """Process entry. uvloop, as the gateway uses it (docs/mqtt-client-choice.md: ~1.2-1.5x on the MQTT path):
    the baseline gets the same event loop, so the comparison is about the design."""
    import uvloop

    uvloop.run(_run(mqtt_port, username, password, sink_port, mode, counter, pipe))
