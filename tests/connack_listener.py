"""A tiny MQTT 5 listener for protocol-level negative tests: it answers CONNECT with a CONNACK
carrying the properties the test chooses (e.g. Shared Subscription Available = 0, which
Mosquitto never sends), SUBSCRIBE with a SUBACK granting every filter (or refusing them with
``suback_code``), PINGREQ with PINGRESP, and closes on DISCONNECT. Nothing else: no routing, no
sessions. Real brokers stand in everywhere else."""

from __future__ import annotations

import asyncio
import contextlib

from gateway.ingress import mqtt5_codec as codec


class ConnackListener:
    def __init__(self, properties: codec.Properties, *, suback_code: int = 0x01) -> None:
        self._properties = properties
        self._suback_code = suback_code
        self._server: asyncio.Server | None = None
        self.connects = 0  # CONNECT packets answered
        self.port = 0

    async def __aenter__(self) -> ConnackListener:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *_: object) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            while True:
                first = (await reader.readexactly(1))[0]
                length, shift = 0, 0
                while True:  # the remaining length, a variable byte integer
                    byte = (await reader.readexactly(1))[0]
                    length |= (byte & 0x7F) << shift
                    shift += 7
                    if not byte & 0x80:
                        break
                body = await reader.readexactly(length)
                kind = first >> 4
                if kind == codec.CONNECT:
                    self.connects += 1
                    props = codec.encode_properties(self._properties)
                    writer.write(_packet(0x20, b"\x00\x00" + props))
                elif kind == codec.SUBSCRIBE:
                    codes = bytes([self._suback_code]) * _filters(body)
                    writer.write(_packet(0x90, body[:2] + b"\x00" + codes))
                elif kind == codec.PINGREQ_TYPE:
                    writer.write(b"\xd0\x00")
                elif kind == codec.DISCONNECT:
                    break
                await writer.drain()
        writer.close()


def _packet(first: int, body: bytes) -> bytes:
    return bytes([first]) + codec.encode_varint(len(body)) + body


def _filters(subscribe_body: bytes) -> int:
    """How many topic filters a SUBSCRIBE body holds (after packet id and properties)."""
    props_len, pos = codec.decode_varint(subscribe_body, 2)
    pos += props_len
    count = 0
    while pos < len(subscribe_body):
        size = int.from_bytes(subscribe_body[pos:pos + 2], "big")
        pos += 2 + size + 1  # the filter and its options byte
        count += 1
    return count
