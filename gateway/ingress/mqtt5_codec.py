"""MQTT 5.0 wire format: pure encode/decode functions and an incremental stream decoder.

No I/O here. The only hot path is `StreamDecoder.feed`, which turns one chunk of bytes from
the socket into every complete PUBLISH in it (one list) plus the few other packets, parsing
with integer offsets over an immutable `bytes` object (a slice of `bytes` is one allocation;
a bytearray or memoryview slice would need a second one to become the `bytes` payload).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

__all__ = [
    "PINGREQ",
    "ConnAck",
    "InboundMessage",
    "MalformedPacket",
    "Properties",
    "PropertyValue",
    "StreamDecoder",
    "Will",
    "decode_connack",
    "decode_disconnect",
    "decode_properties",
    "decode_puback",
    "decode_suback",
    "decode_varint",
    "encode_connect",
    "encode_disconnect",
    "encode_properties",
    "encode_puback",
    "encode_pubacks",
    "encode_publish",
    "encode_subscribe",
    "encode_varint",
    "frame_length",
    "reason_name",
]

# Packet types (high nibble of the first byte).
CONNECT, CONNACK, PUBLISH, PUBACK = 1, 2, 3, 4
PUBREC, PUBREL, PUBCOMP, SUBSCRIBE, SUBACK = 5, 6, 7, 8, 9
UNSUBSCRIBE, UNSUBACK, PINGREQ_TYPE, PINGRESP, DISCONNECT, AUTH = 10, 11, 12, 13, 14, 15

PINGREQ = b"\xc0\x00"
MAX_VARINT = 268_435_455

# Property identifiers used by name in this package.
PAYLOAD_FORMAT = 0x01
MESSAGE_EXPIRY = 0x02
SESSION_EXPIRY = 0x11
ASSIGNED_CLIENT_ID = 0x12
SERVER_KEEP_ALIVE = 0x13
REASON_STRING = 0x1F
RECEIVE_MAXIMUM = 0x21
TOPIC_ALIAS_MAXIMUM = 0x22
TOPIC_ALIAS = 0x23
MAXIMUM_QOS = 0x24
RETAIN_AVAILABLE = 0x25
USER_PROPERTY = 0x26
MAXIMUM_PACKET_SIZE = 0x27
SUBSCRIPTION_ID = 0x0B
SHARED_SUBSCRIPTION_AVAILABLE = 0x2A

# Property id -> wire type: b=byte, h=two-byte int, i=four-byte int, v=varint,
# s=UTF-8 string, d=binary data, p=string pair.
_PROPERTY_TYPES: dict[int, str] = {
    0x01: "b", 0x02: "i", 0x03: "s", 0x08: "s", 0x09: "d", 0x0B: "v", 0x11: "i", 0x12: "s",
    0x13: "h", 0x15: "s", 0x16: "d", 0x17: "b", 0x18: "i", 0x19: "b", 0x1A: "s", 0x1C: "s",
    0x1F: "s", 0x21: "h", 0x22: "h", 0x23: "h", 0x24: "b", 0x25: "b", 0x26: "p", 0x27: "i",
    0x28: "b", 0x29: "b", 0x2A: "b",
}  # fmt: skip

_INT_SIZES = {"b": 1, "h": 2, "i": 4}

PropertyValue = int | str | bytes | list[tuple[str, str]] | list[int]
Properties = dict[int, PropertyValue]
_RawValue = int | str | bytes | tuple[str, str]

_REASONS: dict[int, str] = {
    0x00: "Success", 0x01: "Granted QoS 1", 0x02: "Granted QoS 2", 0x04: "Disconnect with will",
    0x10: "No matching subscribers", 0x80: "Unspecified error", 0x81: "Malformed packet",
    0x82: "Protocol error", 0x83: "Implementation specific error",
    0x84: "Unsupported protocol version", 0x85: "Client identifier not valid",
    0x86: "Bad user name or password", 0x87: "Not authorized", 0x88: "Server unavailable",
    0x89: "Server busy", 0x8A: "Banned", 0x8B: "Server shutting down",
    0x8C: "Bad authentication method", 0x8D: "Keep alive timeout", 0x8E: "Session taken over",
    0x8F: "Topic filter invalid", 0x90: "Topic name invalid", 0x91: "Packet identifier in use",
    0x93: "Receive maximum exceeded", 0x94: "Topic alias invalid", 0x95: "Packet too large",
    0x96: "Message rate too high", 0x97: "Quota exceeded", 0x98: "Administrative action",
    0x99: "Payload format invalid", 0x9A: "Retain not supported", 0x9B: "QoS not supported",
    0x9C: "Use another server", 0x9D: "Server moved", 0x9E: "Shared subscriptions not supported",
    0x9F: "Connection rate exceeded", 0xA0: "Maximum connect time",
    0xA1: "Subscription identifiers not supported", 0xA2: "Wildcard subscriptions not supported",
}  # fmt: skip


def reason_name(code: int) -> str:
    """`0x87 (Not authorized)`: a reason code as shown in error messages."""
    return f"0x{code:02x} ({_REASONS.get(code, 'unknown')})"


class MalformedPacket(ValueError):
    """The peer sent bytes that are not valid MQTT 5; `reason_code` is for our DISCONNECT."""

    def __init__(self, message: str, reason_code: int = 0x81) -> None:
        super().__init__(message)
        self.reason_code = reason_code


@dataclass(frozen=True, slots=True)
class InboundMessage:
    topic: str
    payload: bytes
    qos: int
    packet_id: int  # 0 for QoS 0
    generation: int  # connection generation it arrived on (acks of older ones are dropped)


@dataclass(frozen=True, slots=True)
class Will:
    topic: str
    payload: bytes
    qos: int = 1
    retain: bool = False


@dataclass(frozen=True, slots=True)
class ConnAck:
    session_present: bool
    reason_code: int
    properties: Properties


# Building InboundMessage through the frozen dataclass __init__ costs ~0.65 us (one
# object.__setattr__ call per field); filling the slots through their descriptors costs about
# half. The decoder is the only place that does this; everyone else sees an ordinary instance.
_new_object = object.__new__
_set_topic = InboundMessage.__dict__["topic"].__set__
_set_payload = InboundMessage.__dict__["payload"].__set__
_set_qos = InboundMessage.__dict__["qos"].__set__
_set_packet_id = InboundMessage.__dict__["packet_id"].__set__
_set_generation = InboundMessage.__dict__["generation"].__set__


# ---------------------------------------------------------------------------------------------
# Primitive types


def encode_varint(value: int) -> bytes:
    if not 0 <= value <= MAX_VARINT:
        raise ValueError(f"variable byte integer out of range: {value}")
    if value < 0x80:
        return bytes((value,))
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def decode_varint(buf: bytes, pos: int, end: int | None = None) -> tuple[int, int]:
    """(value, position after it); MalformedPacket if longer than 4 bytes or cut short at
    `end` (default: the end of `buf`)."""
    value = 0
    shift = 0
    n = len(buf) if end is None else end
    while True:
        if pos >= n:
            raise MalformedPacket("variable byte integer cut short")
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7
        if shift > 21:
            raise MalformedPacket("variable byte integer longer than 4 bytes")


def frame_length(buf: bytes, pos: int = 0) -> int:
    """Total length of the packet starting at `pos`, or 0 if its fixed header is incomplete."""
    length = 0
    shift = 0
    i = pos + 1
    n = len(buf)
    while i < n:
        byte = buf[i]
        i += 1
        length |= (byte & 0x7F) << shift
        if byte < 0x80:
            return i - pos + length
        shift += 7
        if shift > 21:
            raise MalformedPacket("remaining length longer than 4 bytes")
    return 0


def _string(value: str) -> bytes:
    raw = value.encode()
    if len(raw) > 0xFFFF:
        raise ValueError("UTF-8 string longer than 65535 bytes")
    return len(raw).to_bytes(2, "big") + raw


def _binary(value: bytes) -> bytes:
    if len(value) > 0xFFFF:
        raise ValueError("binary data longer than 65535 bytes")
    return len(value).to_bytes(2, "big") + value


def _packet(first_byte: int, *parts: bytes) -> bytes:
    body = b"".join(parts)
    return bytes((first_byte,)) + encode_varint(len(body)) + body


# ---------------------------------------------------------------------------------------------
# Properties


def encode_properties(props: Properties | None = None) -> bytes:
    """Property block with its length prefix; ids must be known property identifiers."""
    if not props:
        return b"\x00"
    out = bytearray()
    for pid, value in props.items():
        kind = _PROPERTY_TYPES.get(pid)
        if kind is None:
            raise ValueError(f"unknown property id 0x{pid:02x}")
        if kind == "p":
            if not isinstance(value, list):
                raise TypeError("user properties must be a list of (name, value) pairs")
            for pair in value:
                if not isinstance(pair, tuple):
                    raise TypeError("user properties must be a list of (name, value) pairs")
                out.append(pid)
                out += _string(pair[0]) + _string(pair[1])
            continue
        if kind == "v" and isinstance(value, list):  # repeated subscription identifiers
            for item in value:
                if not isinstance(item, int):
                    raise TypeError("subscription identifiers must be ints")
                out.append(pid)
                out += encode_varint(item)
            continue
        out.append(pid)
        if kind == "s" and isinstance(value, str):
            out += _string(value)
        elif kind == "d" and isinstance(value, bytes):
            out += _binary(value)
        elif isinstance(value, int) and kind == "v":
            out += encode_varint(value)
        elif isinstance(value, int) and kind in _INT_SIZES:
            out += value.to_bytes(_INT_SIZES[kind], "big")
        else:
            raise TypeError(f"bad value for property 0x{pid:02x}: {value!r}")
    return encode_varint(len(out)) + bytes(out)


def _read_u16(buf: bytes, pos: int, end: int) -> int:
    if pos + 2 > end:
        raise MalformedPacket("two-byte integer cut short")
    return (buf[pos] << 8) | buf[pos + 1]


def _read_str(buf: bytes, pos: int, end: int) -> tuple[str, int]:
    size = _read_u16(buf, pos, end)
    start = pos + 2
    if start + size > end:
        raise MalformedPacket("UTF-8 string cut short")
    try:
        return buf[start : start + size].decode(), start + size
    except UnicodeDecodeError as exc:
        raise MalformedPacket(f"invalid UTF-8 string: {exc}") from None


def _read_bin(buf: bytes, pos: int, end: int) -> tuple[bytes, int]:
    size = _read_u16(buf, pos, end)
    start = pos + 2
    if start + size > end:
        raise MalformedPacket("binary data cut short")
    return buf[start : start + size], start + size


def _read_property(buf: bytes, pos: int, end: int) -> tuple[int, _RawValue, int]:
    """One property at `pos`: (id, value, position after it); a string pair is a tuple."""
    if pos >= end:
        raise MalformedPacket("property cut short")
    pid = buf[pos]
    pos += 1
    kind = _PROPERTY_TYPES.get(pid)
    if kind is None:
        raise MalformedPacket(f"unknown property id 0x{pid:02x}")
    value: _RawValue
    if kind == "b":
        if pos >= end:
            raise MalformedPacket("byte property cut short")
        value, pos = buf[pos], pos + 1
    elif kind == "h":
        value, pos = _read_u16(buf, pos, end), pos + 2
    elif kind == "i":
        if pos + 4 > end:
            raise MalformedPacket("four-byte integer cut short")
        value, pos = int.from_bytes(buf[pos : pos + 4], "big"), pos + 4
    elif kind == "v":
        value, pos = decode_varint(buf, pos, end)
    elif kind == "s":
        value, pos = _read_str(buf, pos, end)
    elif kind == "d":
        value, pos = _read_bin(buf, pos, end)
    else:
        name, pos = _read_str(buf, pos, end)
        text, pos = _read_str(buf, pos, end)
        value = (name, text)
    return pid, value, pos


def decode_properties(buf: bytes, pos: int, end: int | None = None) -> tuple[Properties, int]:
    """Property block (length prefix included) at `pos`: (properties, position after it).

    User properties (0x26) come back as one list of (name, value) pairs and subscription
    identifiers (0x0B) as a list of ints; for any other repeated id the last one wins.
    """
    if end is None:
        end = len(buf)
    length, pos = decode_varint(buf, pos, end)
    stop = pos + length
    if stop > end:
        raise MalformedPacket("property block longer than the packet")
    props: Properties = {}
    pairs: list[tuple[str, str]] = []
    sub_ids: list[int] = []
    while pos < stop:
        pid, value, pos = _read_property(buf, pos, stop)
        if isinstance(value, tuple):
            pairs.append(value)
        elif pid == SUBSCRIPTION_ID and isinstance(value, int):
            sub_ids.append(value)
        else:
            props[pid] = value
    if pairs:
        props[USER_PROPERTY] = pairs
    if sub_ids:
        props[SUBSCRIPTION_ID] = sub_ids
    return props, stop


# ---------------------------------------------------------------------------------------------
# Encoders (client -> server)


def encode_connect(
    *,
    client_id: str,
    keepalive_s: int,
    clean_start: bool,
    username: str | None = None,
    password: str | None = None,
    will: Will | None = None,
    properties: Properties | None = None,
) -> bytes:
    if not 0 <= keepalive_s <= 0xFFFF:
        raise ValueError("keepalive must fit in 16 bits")
    flags = 0x02 if clean_start else 0
    payload = [_string(client_id)]
    if will is not None:
        if will.qos not in (0, 1, 2):
            raise ValueError(f"will QoS must be 0, 1 or 2, not {will.qos}")
        flags |= 0x04 | (will.qos << 3) | (0x20 if will.retain else 0)
        payload += [b"\x00", _string(will.topic), _binary(will.payload)]
    if username is not None:
        flags |= 0x80
        payload.append(_string(username))
    if password is not None:
        flags |= 0x40
        payload.append(_binary(password.encode()))
    header = b"\x00\x04MQTT\x05" + bytes((flags,)) + keepalive_s.to_bytes(2, "big")
    return _packet(0x10, header, encode_properties(properties), *payload)


def encode_subscribe(packet_id: int, filters: Sequence[tuple[str, int]]) -> bytes:
    if not filters:
        raise ValueError("SUBSCRIBE needs at least one topic filter")
    parts = [packet_id.to_bytes(2, "big"), b"\x00"]
    for topic_filter, options in filters:
        parts += [_string(topic_filter), bytes((options,))]
    return _packet(0x82, *parts)


def encode_publish(
    topic: str,
    payload: bytes,
    qos: int = 0,
    retain: bool = False,
    packet_id: int = 0,
    dup: bool = False,
    properties: Properties | None = None,
) -> bytes:
    if qos not in (0, 1, 2):
        raise ValueError(f"QoS must be 0, 1 or 2, not {qos}")
    if qos and not 0 < packet_id <= 0xFFFF:
        raise ValueError("QoS > 0 needs a packet id in 1..65535")
    first = 0x30 | (0x08 if dup else 0) | (qos << 1) | (1 if retain else 0)
    packet_id_raw = packet_id.to_bytes(2, "big") if qos else b""
    return _packet(first, _string(topic), packet_id_raw, encode_properties(properties), payload)


def encode_puback(packet_id: int, reason_code: int = 0) -> bytes:
    if reason_code == 0:  # the short form: a success needs no reason code (MQTT 5 3.4.2.1)
        return b"\x40\x02" + packet_id.to_bytes(2, "big")
    return b"\x40\x03" + packet_id.to_bytes(2, "big") + bytes((reason_code,))


def encode_pubacks(packet_ids: Iterable[int]) -> bytes:
    """Success PUBACKs for many packet ids, as one bytes object (one transport.write)."""
    return b"".join([(0x40020000 | pid).to_bytes(4, "big") for pid in packet_ids])


def encode_disconnect(reason_code: int = 0, properties: Properties | None = None) -> bytes:
    if reason_code == 0 and not properties:
        return b"\xe0\x00"
    return _packet(0xE0, bytes((reason_code,)), encode_properties(properties))


# ---------------------------------------------------------------------------------------------
# Decoders (server -> client); `body` is the packet without its fixed header


def decode_connack(body: bytes) -> ConnAck:
    if len(body) < 2:
        raise MalformedPacket("CONNACK shorter than 2 bytes")
    if body[0] & 0xFE:
        raise MalformedPacket("CONNACK reserved flags set")
    props: Properties = {}
    if len(body) > 2:
        props, end = decode_properties(body, 2)
        if end != len(body):
            raise MalformedPacket("trailing bytes after CONNACK properties")
    return ConnAck(bool(body[0] & 1), body[1], props)


def decode_puback(body: bytes) -> tuple[int, int]:
    """(packet id, reason code); the short forms (no reason, no properties) are allowed."""
    if len(body) < 2:
        raise MalformedPacket("PUBACK shorter than 2 bytes")
    return (body[0] << 8) | body[1], body[2] if len(body) > 2 else 0


def decode_suback(body: bytes) -> tuple[int, list[int], Properties]:
    packet_id = _read_u16(body, 0, len(body))
    props, pos = decode_properties(body, 2)
    if pos >= len(body):
        raise MalformedPacket("SUBACK without reason codes")
    return packet_id, list(body[pos:]), props


def decode_disconnect(body: bytes) -> tuple[int, Properties]:
    if not body:
        return 0, {}
    props: Properties = {}
    if len(body) > 1:
        props, _ = decode_properties(body, 1)
    return body[0], props


# ---------------------------------------------------------------------------------------------
# Stream decoder


class StreamDecoder:
    """Incremental decoder for one connection (server -> client direction).

    `feed(chunk)` returns every complete PUBLISH in the chunk as InboundMessage (in arrival
    order) and every other complete packet as (first byte, body). An incomplete tail is kept and
    completed by later chunks; a packet spread over many chunks is joined once, when complete.
    QoS 1 messages are also recorded in `inflight` (packet id -> message) until the owner pops
    them when it acknowledges. Inbound topic aliases are resolved (1..topic_alias_maximum).
    """

    __slots__ = (
        "_need",
        "_pending",
        "_pending_len",
        "aliases",
        "generation",
        "inflight",
        "topic_alias_maximum",
    )

    def __init__(self, generation: int = 0, topic_alias_maximum: int = 0) -> None:
        self.generation = generation
        self.topic_alias_maximum = topic_alias_maximum
        self.aliases: dict[int, str] = {}
        self.inflight: dict[int, InboundMessage] = {}
        self._pending: list[bytes] = []
        self._pending_len = 0
        self._need = 0  # total size of the packet the pending bytes start (0: header incomplete)

    @property
    def buffered(self) -> int:
        """Bytes of an incomplete packet waiting for more data."""
        return self._pending_len

    def feed(self, data: bytes) -> tuple[list[InboundMessage], list[tuple[int, bytes]]]:
        if self._pending:
            self._pending.append(data)
            self._pending_len += len(data)
            if self._pending_len < self._need:
                return [], []
            data = b"".join(self._pending)
            self._pending = []
            self._pending_len = 0
        messages: list[InboundMessage] = []
        others: list[tuple[int, bytes]] = []
        append = messages.append
        inflight = self.inflight
        generation = self.generation
        new, cls = _new_object, InboundMessage
        set_topic, set_payload, set_qos = _set_topic, _set_payload, _set_qos
        set_packet_id, set_generation = _set_packet_id, _set_generation
        n = len(data)
        pos = 0
        try:
            while pos + 1 < n:
                first = data[pos]
                length = data[pos + 1]
                if length < 0x80:
                    start = pos + 2
                elif pos + 2 < n and data[pos + 2] < 0x80:
                    length = (length & 0x7F) | (data[pos + 2] << 7)
                    start = pos + 3
                else:
                    total = frame_length(data, pos)
                    if not total:
                        break
                    length, start = decode_varint(data, pos + 1)
                end = start + length
                if end > n:
                    break
                if first & 0xF0 == 0x30:
                    qos = (first >> 1) & 3
                    p = start + 2 + ((data[start] << 8) | data[start + 1])
                    if p > end:
                        raise MalformedPacket("PUBLISH topic longer than the packet")
                    topic = data[start + 2 : p].decode()
                    if qos:
                        if qos != 1:
                            raise MalformedPacket(f"unsupported inbound QoS {qos}", 0x9B)
                        packet_id = (data[p] << 8) | data[p + 1]
                        if not packet_id:
                            raise MalformedPacket("QoS 1 PUBLISH with packet id 0", 0x82)
                        p += 2
                    else:
                        packet_id = 0
                    if data[p] or not topic:
                        p, topic = self._publish_properties(data, p, end, topic)
                    else:
                        p += 1
                    if p > end:
                        raise MalformedPacket("PUBLISH header longer than the packet")
                    msg = new(cls)
                    set_topic(msg, topic)
                    set_payload(msg, data[p:end])
                    set_qos(msg, qos)
                    set_packet_id(msg, packet_id)
                    set_generation(msg, generation)
                    if qos:
                        inflight[packet_id] = msg
                    append(msg)
                else:
                    others.append((first, data[start:end]))
                pos = end
        except IndexError:
            raise MalformedPacket("packet shorter than its fields") from None
        except UnicodeDecodeError as exc:
            raise MalformedPacket(f"topic is not valid UTF-8: {exc}") from None
        if pos < n:
            rest = data[pos:] if pos else data
            self._pending = [rest]
            self._pending_len = len(rest)
            self._need = frame_length(rest)
        return messages, others

    def _publish_properties(self, data: bytes, pos: int, end: int, topic: str) -> tuple[int, str]:
        """Slow path: the PUBLISH has properties (or an empty topic). Returns (payload start,
        topic); only the topic alias matters to us, the other properties are skipped."""
        length, pos = decode_varint(data, pos, end)
        stop = pos + length
        if stop > end:
            raise MalformedPacket("PUBLISH properties longer than the packet")
        alias = 0
        while pos < stop:
            pid, value, pos = _read_property(data, pos, stop)
            if pid == TOPIC_ALIAS:
                assert isinstance(value, int)
                alias = value
        if alias:
            if alias > self.topic_alias_maximum:
                raise MalformedPacket(f"topic alias {alias} out of range", 0x94)
            if topic:
                self.aliases[alias] = topic
            else:
                known = self.aliases.get(alias)
                if known is None:
                    raise MalformedPacket(f"unknown topic alias {alias}", 0x82)
                topic = known
        elif not topic:
            raise MalformedPacket("PUBLISH with an empty topic and no topic alias", 0x82)
        return stop, topic
