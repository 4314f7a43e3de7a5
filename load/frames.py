"""A tiny MQTT 5 encoder for the load generator: CONNECT (with will), PUBLISH, SUBSCRIBE,
DISCONNECT, PINGREQ, and a minimal reader for what a broker sends back (CONNACK, PUBACK, PINGRESP,
DISCONNECT, PUBLISH).

Frames are plain ``bytes`` so a generator can write them straight to a socket. Everything
the generator sends repeatedly (topic, fixed header parts) is encoded once; see
``PublishTemplate``. Independent of gateway/ingress on purpose: the load must not share the
gateway's protocol code (OASIS MQTT 5.0, sections 2 and 3).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

CONNECT = 0x10
CONNACK = 0x20
PUBLISH = 0x30
PUBACK = 0x40
SUBSCRIBE = 0x80
SUBACK = 0x90
PINGREQ_BYTE = 0xC0
PINGRESP = 0xD0
DISCONNECT = 0xE0

PINGREQ = b"\xc0\x00"
DISCONNECT_NORMAL = b"\xe0\x00"  # reason 0x00, no properties (remaining length 0 allowed)

# Property identifiers used here (MQTT 5.0, 2.2.2.2).
PROP_PAYLOAD_FORMAT = 0x01
PROP_MESSAGE_EXPIRY = 0x02
PROP_CONTENT_TYPE = 0x03
PROP_SESSION_EXPIRY = 0x11
PROP_WILL_DELAY = 0x18
PROP_RECEIVE_MAXIMUM = 0x21
PROP_TOPIC_ALIAS = 0x23


def varint(n: int) -> bytes:
    """Variable byte integer (MQTT 5.0, 1.5.5): 1 to 4 bytes, 7 bits each, little end first."""
    if not 0 <= n <= 268_435_455:
        raise ValueError(f"variable byte integer out of range: {n}")
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def utf8(s: str) -> bytes:
    raw = s.encode()
    if len(raw) > 0xFFFF:
        raise ValueError("UTF-8 string longer than 65535 bytes")
    return struct.pack("!H", len(raw)) + raw


def binary(b: bytes) -> bytes:
    if len(b) > 0xFFFF:
        raise ValueError("binary data longer than 65535 bytes")
    return struct.pack("!H", len(b)) + b


@dataclass(frozen=True, slots=True)
class Properties:
    """The few properties the generator needs; None = absent."""

    session_expiry: int | None = None
    receive_maximum: int | None = None
    will_delay: int | None = None
    message_expiry: int | None = None
    payload_format_utf8: bool | None = None
    content_type: str | None = None
    topic_alias: int | None = None

    def encode(self) -> bytes:
        body = bytearray()
        if self.payload_format_utf8 is not None:
            body += bytes((PROP_PAYLOAD_FORMAT, 1 if self.payload_format_utf8 else 0))
        if self.message_expiry is not None:
            body += bytes((PROP_MESSAGE_EXPIRY,)) + struct.pack("!I", self.message_expiry)
        if self.content_type is not None:
            body += bytes((PROP_CONTENT_TYPE,)) + utf8(self.content_type)
        if self.session_expiry is not None:
            body += bytes((PROP_SESSION_EXPIRY,)) + struct.pack("!I", self.session_expiry)
        if self.will_delay is not None:
            body += bytes((PROP_WILL_DELAY,)) + struct.pack("!I", self.will_delay)
        if self.receive_maximum is not None:
            body += bytes((PROP_RECEIVE_MAXIMUM,)) + struct.pack("!H", self.receive_maximum)
        if self.topic_alias is not None:
            body += bytes((PROP_TOPIC_ALIAS,)) + struct.pack("!H", self.topic_alias)
        return varint(len(body)) + bytes(body)


NO_PROPERTIES = b"\x00"


@dataclass(frozen=True, slots=True)
class Will:
    topic: str
    payload: bytes
    qos: int = 1
    retain: bool = False
    properties: Properties = Properties()


def connect(
    client_id: str,
    *,
    keepalive: int = 60,
    clean_start: bool = True,
    will: Will | None = None,
    username: str | None = None,
    password: bytes | None = None,
    properties: Properties = Properties(),
) -> bytes:
    flags = 0x02 if clean_start else 0
    payload = bytearray(utf8(client_id))
    if will is not None:
        if will.qos not in (0, 1, 2):
            raise ValueError("will QoS must be 0, 1 or 2")
        flags |= 0x04 | (will.qos << 3) | (0x20 if will.retain else 0)
        payload += will.properties.encode() + utf8(will.topic) + binary(will.payload)
    if username is not None:
        flags |= 0x80
        payload += utf8(username)
    if password is not None:
        flags |= 0x40
        payload += binary(password)
    variable = b"\x00\x04MQTT\x05" + bytes((flags,)) + struct.pack("!H", keepalive) + properties.encode()
    body = variable + bytes(payload)
    return bytes((CONNECT,)) + varint(len(body)) + body


def publish(
    topic: str,
    payload: bytes,
    *,
    qos: int = 0,
    packet_id: int = 0,
    retain: bool = False,
    dup: bool = False,
    properties: Properties = Properties(),
) -> bytes:
    if qos not in (0, 1, 2):
        raise ValueError("QoS must be 0, 1 or 2")
    if qos and not 0 < packet_id <= 0xFFFF:
        raise ValueError("QoS > 0 needs a packet id in 1..65535")
    first = PUBLISH | (0x08 if dup else 0) | (qos << 1) | (0x01 if retain else 0)
    body = utf8(topic) + (struct.pack("!H", packet_id) if qos else b"") + properties.encode() + payload
    return bytes((first,)) + varint(len(body)) + body


def subscribe(packet_id: int, topic_filter: str, qos: int = 1) -> bytes:
    """SUBSCRIBE to one filter (MQTT 5.0, 3.8): no properties; options = the maximum QoS only
    (No Local off, Retain As Published off, Retain Handling 0). The fixed header's flags are
    0b0010, as the spec requires."""
    if qos not in (0, 1, 2):
        raise ValueError("QoS must be 0, 1 or 2")
    if not 0 < packet_id <= 0xFFFF:
        raise ValueError("SUBSCRIBE needs a packet id in 1..65535")
    body = struct.pack("!H", packet_id) + NO_PROPERTIES + utf8(topic_filter) + bytes((qos,))
    return bytes((SUBSCRIBE | 0x02,)) + varint(len(body)) + body


def disconnect(reason: int = 0) -> bytes:
    if reason == 0:
        return DISCONNECT_NORMAL
    return bytes((DISCONNECT, 2, reason, 0))


class PublishTemplate:
    """PUBLISH frames to one topic with the topic and fixed-header byte encoded once.

    ``frame(payload)`` is byte-for-byte ``publish(topic, payload, qos=...)`` with no properties,
    at the cost of one length encoding and one join per message.
    """

    __slots__ = ("_first", "_head", "_head_len", "qos")

    def __init__(self, topic: str, qos: int = 0) -> None:
        if qos not in (0, 1):
            raise ValueError("templates support QoS 0 and 1")
        self.qos = qos
        self._first = bytes((PUBLISH | (qos << 1),))
        self._head = utf8(topic)
        self._head_len = len(self._head) + 1 + (2 if qos else 0)  # topic + [packet id] + props len

    def frame(self, payload: bytes, packet_id: int = 0) -> bytes:
        n = self._head_len + len(payload)
        if n < 128:
            length = bytes((n,))
        elif n < 16384:
            length = bytes(((n & 0x7F) | 0x80, n >> 7))
        else:
            length = varint(n)
        if self.qos:
            return b"".join((self._first, length, self._head, packet_id.to_bytes(2, "big"), b"\x00", payload))
        return b"".join((self._first, length, self._head, b"\x00", payload))


@dataclass(frozen=True, slots=True)
class Packet:
    kind: int  # high nibble of the first byte, e.g. CONNACK
    flags: int  # low nibble
    body: bytes

    @property
    def reason_code(self) -> int:
        """CONNACK: the reason code; PUBACK: the reason (0 when omitted); DISCONNECT: reason."""
        if self.kind == CONNACK:
            return self.body[1] if len(self.body) > 1 else 0
        if self.kind == PUBACK:
            return self.body[2] if len(self.body) > 2 else 0
        if self.kind == DISCONNECT:
            return self.body[0] if self.body else 0
        return 0

    @property
    def packet_id(self) -> int:
        return int.from_bytes(self.body[:2], "big") if self.kind in (PUBACK, SUBACK) else 0


class FrameReader:
    """Splits a byte stream into MQTT packets; ``feed`` returns the complete ones."""

    __slots__ = ("_buf",)

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[Packet]:
        buf = self._buf
        buf += data
        out: list[Packet] = []
        pos = 0
        end = len(buf)
        while end - pos >= 2:
            length, mult, i, complete = 0, 1, pos + 1, False
            while i < end:
                b = buf[i]
                i += 1
                length += (b & 0x7F) * mult
                if not b & 0x80:
                    complete = True
                    break
                mult <<= 7
                if mult > 1 << 21:
                    raise ValueError("malformed remaining length")
            if not complete or i + length > end:
                break
            first = buf[pos]
            out.append(Packet(first & 0xF0, first & 0x0F, bytes(buf[i:i + length])))
            pos = i + length
        if pos:
            del buf[:pos]
        return out


def parse_publish(packet: Packet) -> tuple[str, int, bytes]:
    """(topic, packet id, payload) of a PUBLISH packet (properties skipped)."""
    body = packet.body
    qos = (packet.flags >> 1) & 0x03
    tlen = int.from_bytes(body[:2], "big")
    topic = body[2:2 + tlen].decode()
    pos = 2 + tlen
    pid = 0
    if qos:
        pid = int.from_bytes(body[pos:pos + 2], "big")
        pos += 2
    plen, shift = 0, 0
    while True:
        b = body[pos]
        pos += 1
        plen |= (b & 0x7F) << shift
        if not b & 0x80:
            break
        shift += 7
    return topic, pid, body[pos + plen:]


def puback(packet_id: int) -> bytes:
    return bytes((PUBACK, 2)) + packet_id.to_bytes(2, "big")
