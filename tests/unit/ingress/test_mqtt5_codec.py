"""MQTT 5 wire codec: primitives, packet encoders/decoders and the incremental stream decoder."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.ingress import mqtt5_codec as c
from gateway.ingress.mqtt5_codec import InboundMessage, MalformedPacket, StreamDecoder, Will

# ----------------------------------------------------------------------------------------------
# Variable byte integers and frame lengths

VARINT_CASES = [
    (0, b"\x00"),
    (127, b"\x7f"),
    (128, b"\x80\x01"),
    (16_383, b"\xff\x7f"),
    (16_384, b"\x80\x80\x01"),
    (2_097_151, b"\xff\xff\x7f"),
    (2_097_152, b"\x80\x80\x80\x01"),
    (268_435_455, b"\xff\xff\xff\x7f"),
]


@pytest.mark.parametrize(("value", "raw"), VARINT_CASES)
def test_varint_boundaries(value: int, raw: bytes) -> None:
    assert c.encode_varint(value) == raw
    assert c.decode_varint(b"\xaa" + raw + b"\xbb", 1) == (value, 1 + len(raw))


@pytest.mark.parametrize("value", [-1, 268_435_456])
def test_varint_out_of_range(value: int) -> None:
    with pytest.raises(ValueError):
        c.encode_varint(value)


def test_varint_malformed() -> None:
    with pytest.raises(MalformedPacket, match="longer than 4"):
        c.decode_varint(b"\xff\xff\xff\xff\x01", 0)
    with pytest.raises(MalformedPacket, match="cut short"):
        c.decode_varint(b"\xff\xff", 0)
    with pytest.raises(MalformedPacket, match="cut short"):
        c.decode_varint(b"\xff\x01", 0, end=1)


@given(st.integers(0, c.MAX_VARINT))
def test_varint_roundtrip(value: int) -> None:
    raw = c.encode_varint(value)
    assert 1 <= len(raw) <= 4
    assert c.decode_varint(raw, 0) == (value, len(raw))


def test_frame_length() -> None:
    assert c.frame_length(b"") == 0
    assert c.frame_length(b"\x30") == 0
    assert c.frame_length(b"\x30\x80") == 0  # continuation byte, length not complete yet
    assert c.frame_length(b"\xd0\x00") == 2
    assert c.frame_length(b"\x30\x80\x01") == 3 + 128
    assert c.frame_length(b"xx\x30\x05", 2) == 7
    with pytest.raises(MalformedPacket):
        c.frame_length(b"\x30\xff\xff\xff\xff\x01")


# ----------------------------------------------------------------------------------------------
# Properties


def test_properties_roundtrip_all_types() -> None:
    props: c.Properties = {
        0x01: 1,  # byte
        0x02: 3600,  # four-byte int
        0x03: "application/json",  # string
        0x09: b"\x00\x01corr",  # binary
        0x0B: [1, 200_000],  # varint, repeated
        0x21: 65535,  # two-byte int
        0x26: [("a", "1"), ("a", "2"), ("ü", "")],  # string pairs, repeated and in order
    }
    raw = c.encode_properties(props)
    decoded, end = c.decode_properties(raw, 0)
    assert end == len(raw)
    assert decoded == props


def test_properties_empty_and_errors() -> None:
    assert c.encode_properties(None) == b"\x00"
    assert c.decode_properties(b"\x00", 0) == ({}, 1)
    with pytest.raises(ValueError, match="unknown property"):
        c.encode_properties({0x7F: 1})
    with pytest.raises(MalformedPacket, match="unknown property"):
        c.decode_properties(b"\x02\x7f\x00", 0)
    with pytest.raises(MalformedPacket, match="longer than the packet"):
        c.decode_properties(b"\x05\x01\x01", 0)
    with pytest.raises(MalformedPacket, match="cut short"):
        c.decode_properties(b"\x02\x21\x00", 0)  # two-byte int with one byte
    with pytest.raises(MalformedPacket, match="UTF-8"):
        c.decode_properties(b"\x04\x1f\x00\x01\xff", 0)


# ----------------------------------------------------------------------------------------------
# Encoders


def test_encode_connect_minimal() -> None:
    raw = c.encode_connect(client_id="c1", keepalive_s=30, clean_start=True)
    assert raw == b"\x10\x0f\x00\x04MQTT\x05\x02\x00\x1e\x00\x00\x02c1"


def test_encode_connect_full() -> None:
    raw = c.encode_connect(
        client_id="car",
        keepalive_s=60,
        clean_start=False,
        username="u",
        password="p",
        will=Will("w/t", b"gone", qos=1, retain=True),
        properties={c.SESSION_EXPIRY: 3600, c.RECEIVE_MAXIMUM: 100},
    )
    assert raw[0] == 0x10
    length, body_start = c.decode_varint(raw, 1)
    body = raw[body_start:]
    assert len(body) == length
    assert body[:7] == b"\x00\x04MQTT\x05"
    assert body[7] == 0x80 | 0x40 | 0x20 | 0x08 | 0x04  # user, password, will retain/QoS 1/flag
    assert body[8:10] == b"\x00\x3c"
    props, pos = c.decode_properties(body, 10)
    assert props == {c.SESSION_EXPIRY: 3600, c.RECEIVE_MAXIMUM: 100}
    assert body[pos:] == (
        b"\x00\x03car" + b"\x00" + b"\x00\x03w/t" + b"\x00\x04gone" + b"\x00\x01u" + b"\x00\x01p"
    )


def test_encode_publish() -> None:
    assert c.encode_publish("a/b", b"hi", 1, packet_id=10) == (b"\x32\x0a\x00\x03a/b\x00\x0a\x00hi")
    assert c.encode_publish("a", b"", 0, retain=True) == b"\x31\x04\x00\x01a\x00"
    assert c.encode_publish("a", b"x", 1, packet_id=1, dup=True)[0] == 0x3A
    big = c.encode_publish("t", b"x" * 200, 0)
    assert big[:3] == b"\x30\xcc\x01"  # remaining length 204 as two bytes
    with pytest.raises(ValueError):
        c.encode_publish("a", b"", 1)  # QoS 1 without packet id
    with pytest.raises(ValueError):
        c.encode_publish("a", b"", 3, packet_id=1)
    with pytest.raises(ValueError):
        c.encode_publish("a" * 70_000, b"")


def test_encode_subscribe_puback_disconnect() -> None:
    assert c.encode_subscribe(7, [("t/#", 1), ("x", 0)]) == (
        b"\x82\x0d\x00\x07\x00\x00\x03t/#\x01\x00\x01x\x00"
    )
    with pytest.raises(ValueError):
        c.encode_subscribe(1, [])
    assert c.encode_puback(0x1234) == b"\x40\x02\x12\x34"
    assert c.encode_puback(1, 0x87) == b"\x40\x03\x00\x01\x87"
    assert c.encode_pubacks([1, 0x1234, 65535]) == (
        b"\x40\x02\x00\x01" + b"\x40\x02\x12\x34" + b"\x40\x02\xff\xff"
    )
    assert c.encode_pubacks([]) == b""
    assert c.encode_disconnect() == b"\xe0\x00"
    assert c.encode_disconnect(0x04) == b"\xe0\x02\x04\x00"
    assert c.PINGREQ == b"\xc0\x00"


# ----------------------------------------------------------------------------------------------
# Decoders


def test_decode_connack() -> None:
    # As sent by Mosquitto 2.0.11: topic alias maximum 10, receive maximum 20.
    ack = c.decode_connack(b"\x00\x00\x06\x22\x00\x0a\x21\x00\x14")
    assert ack == c.ConnAck(False, 0, {c.TOPIC_ALIAS_MAXIMUM: 10, c.RECEIVE_MAXIMUM: 20})
    ack = c.decode_connack(b"\x01\x00\x05\x12\x00\x02id")
    assert ack.session_present and ack.properties[c.ASSIGNED_CLIENT_ID] == "id"
    assert c.decode_connack(b"\x00\x87") == c.ConnAck(False, 0x87, {})  # no properties at all
    with pytest.raises(MalformedPacket):
        c.decode_connack(b"\x00")
    with pytest.raises(MalformedPacket):
        c.decode_connack(b"\x02\x00\x00")  # reserved flag
    with pytest.raises(MalformedPacket):
        c.decode_connack(b"\x00\x00\x00\xff")  # trailing garbage


def test_decode_puback_suback_disconnect() -> None:
    assert c.decode_puback(b"\x00\x05") == (5, 0)
    assert c.decode_puback(b"\x00\x05\x87") == (5, 0x87)
    assert c.decode_puback(b"\x00\x05\x10\x00") == (5, 0x10)
    with pytest.raises(MalformedPacket):
        c.decode_puback(b"\x00")
    assert c.decode_suback(b"\x00\x07\x00\x01\x80") == (7, [1, 0x80], {})
    with pytest.raises(MalformedPacket):
        c.decode_suback(b"\x00\x07\x00")
    assert c.decode_disconnect(b"") == (0, {})
    assert c.decode_disconnect(b"\x8e") == (0x8E, {})
    assert c.decode_disconnect(b"\x8b\x06\x1f\x00\x03bye") == (0x8B, {c.REASON_STRING: "bye"})
    assert c.reason_name(0x87) == "0x87 (Not authorized)"


# ----------------------------------------------------------------------------------------------
# Stream decoder


def _stream() -> tuple[bytes, list[tuple[str, bytes, int, int]]]:
    """A server->client byte stream mixing every shape the decoder has to handle."""
    packets = [
        c.encode_publish("t/1", b"q0", 0),
        b"\x20\x09\x00\x00\x06\x22\x00\x0a\x21\x00\x14",  # CONNACK with properties
        c.encode_publish("t/2", b"q1", 1, packet_id=1),
        b"\xd0\x00",  # PINGRESP
        c.encode_publish("t/ü", b"x" * 300, 1, packet_id=65535),  # two-byte remaining length
        c.encode_publish("t/big", b"y" * 20_000, 0),  # three-byte remaining length
        c.encode_publish("t/props", b"p", 1, packet_id=2, properties={0x02: 60, 0x03: "a/b"}),
        c.encode_publish("t/alias", b"a1", 0, properties={c.TOPIC_ALIAS: 3}),  # sets alias 3
        c.encode_publish("", b"a2", 1, packet_id=3, properties={c.TOPIC_ALIAS: 3}),  # uses it
        b"\x40\x02\x00\x09",  # PUBACK
        c.encode_publish("t/empty", b"", 0),
    ]
    expected = [
        ("t/1", b"q0", 0, 0),
        ("t/2", b"q1", 1, 1),
        ("t/ü", b"x" * 300, 1, 65535),
        ("t/big", b"y" * 20_000, 0, 0),
        ("t/props", b"p", 1, 2),
        ("t/alias", b"a1", 0, 0),
        ("t/alias", b"a2", 1, 3),
        ("t/empty", b"", 0, 0),
    ]
    return b"".join(packets), expected


CONTROLS = [
    (0x20, b"\x00\x00\x06\x22\x00\x0a\x21\x00\x14"),
    (0xD0, b""),
    (0x40, b"\x00\x09"),
]


def _feed_all(
    chunks: list[bytes], decoder: StreamDecoder
) -> tuple[list[InboundMessage], list[tuple[int, bytes]], list[int]]:
    messages: list[InboundMessage] = []
    others: list[tuple[int, bytes]] = []
    sizes = []
    for chunk in chunks:
        batch, other = decoder.feed(chunk)
        messages += batch
        others += other
        sizes.append(len(batch))
    return messages, others, sizes


def _summary(messages: list[InboundMessage]) -> list[tuple[str, bytes, int, int]]:
    return [(m.topic, m.payload, m.qos, m.packet_id) for m in messages]


def test_stream_whole_chunk_is_one_batch() -> None:
    data, expected = _stream()
    decoder = StreamDecoder(generation=7, topic_alias_maximum=10)
    messages, others = decoder.feed(data)
    assert _summary(messages) == expected
    assert all(type(m.payload) is bytes and m.generation == 7 for m in messages)
    assert others == CONTROLS
    assert decoder.buffered == 0
    assert sorted(decoder.inflight) == [1, 2, 3, 65535]
    assert decoder.inflight[2] is messages[4]
    with pytest.raises(AttributeError):
        messages[0].topic = "x"  # type: ignore[misc]  # frozen: the assignment is what is tested


def test_stream_split_at_every_byte() -> None:
    data, expected = _stream()
    for cut in range(len(data) + 1):
        decoder = StreamDecoder(topic_alias_maximum=10)
        messages, others, _ = _feed_all([data[:cut], data[cut:]], decoder)
        assert _summary(messages) == expected, cut
        assert others == CONTROLS, cut
        assert decoder.buffered == 0


def test_stream_split_at_every_pair_of_bytes_in_the_headers() -> None:
    data, _ = _stream()
    prefix = (
        len(c.encode_publish("t/1", b"q0", 0)) + 11 + len(c.encode_publish("t/2", b"q1", 1, packet_id=1)) + 2
    )
    small = data[:120]  # four small packets, then the start of the two-byte-length one
    for i in range(len(small)):
        for j in range(i, len(small) + 1):
            decoder = StreamDecoder(topic_alias_maximum=10)
            messages, others, _ = _feed_all([small[:i], small[i:j], small[j:]], decoder)
            assert [m.topic for m in messages] == ["t/1", "t/2"], (i, j)
            assert others == CONTROLS[:2]
            assert decoder.buffered == len(small) - prefix


def test_stream_one_byte_at_a_time() -> None:
    data, expected = _stream()
    decoder = StreamDecoder(topic_alias_maximum=10)
    messages, others, sizes = _feed_all([data[i : i + 1] for i in range(len(data))], decoder)
    assert _summary(messages) == expected
    assert others == CONTROLS
    assert max(sizes) == 1


def test_stream_large_packet_is_joined_once_complete() -> None:
    packet = c.encode_publish("t", b"z" * 100_000, 1, packet_id=9)
    decoder = StreamDecoder()
    chunks = [packet[i : i + 4096] for i in range(0, len(packet), 4096)]
    for chunk in chunks[:-1]:
        assert decoder.feed(chunk) == ([], [])
    assert decoder.buffered == len(packet) - len(chunks[-1])
    messages, _ = decoder.feed(chunks[-1])
    assert _summary(messages) == [("t", b"z" * 100_000, 1, 9)]
    assert decoder.buffered == 0


def test_stream_many_packets_in_one_chunk_then_tail() -> None:
    packets = [c.encode_publish(f"car/{i}/t", b"%05d" % i, 1, packet_id=i + 1) for i in range(500)]
    data = b"".join(packets)
    decoder = StreamDecoder()
    first, _ = decoder.feed(data[:-3])
    assert len(first) == 499
    second, _ = decoder.feed(data[-3:])
    assert [m.payload for m in first + second] == [b"%05d" % i for i in range(500)]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, 2000), max_size=12))
def test_stream_random_splits(cuts: list[int]) -> None:
    data, expected = _stream()
    points = sorted({min(cut * 11, len(data)) for cut in cuts})
    bounds = [0, *points, len(data)]
    chunks = [data[a:b] for a, b in itertools.pairwise(bounds)]
    messages, others, _ = _feed_all(chunks, StreamDecoder(topic_alias_maximum=10))
    assert _summary(messages) == expected
    assert others == CONTROLS


@pytest.mark.parametrize(
    ("data", "reason", "match"),
    [
        (b"\x30\x05\x00\x09abc", 0x81, "topic longer"),  # topic length beyond the packet
        (b"\x32\x06\x00\x01a\x00\x00\x00", 0x82, "packet id 0"),
        (b"\x34\x06\x00\x01a\x00\x01\x00", 0x9B, "QoS 2"),
        (b"\x30\x04\x00\x01\xff\x00", 0x81, "UTF-8"),
        (b"\x30\x03\x00\x00\x00", 0x82, "empty topic"),
        (b"\x30\x06\x00\x00\x03\x23\x00\x05", 0x82, "unknown topic alias"),
        (b"\x30\x07\x00\x01a\x03\x23\x00\x0b", 0x94, "out of range"),
        (b"\x30\x07\x00\x01a\x09\x23\x00\x01", 0x81, "longer than the packet"),
        (b"\x30\xff\xff\xff\xff\x01", 0x81, "longer than 4"),
        (b"\x32\x03\x00\x01a", 0x81, "shorter"),  # no room for the packet id
    ],
)
def test_stream_malformed(data: bytes, reason: int, match: str) -> None:
    decoder = StreamDecoder(topic_alias_maximum=10)
    with pytest.raises(MalformedPacket, match=match) as info:
        decoder.feed(data + b"\xd0\x00")
    assert info.value.reason_code == reason


def test_stream_alias_table_survives_chunks() -> None:
    decoder = StreamDecoder(topic_alias_maximum=2)
    decoder.feed(c.encode_publish("long/topic/name", b"1", 0, properties={c.TOPIC_ALIAS: 2}))
    messages, _ = decoder.feed(c.encode_publish("", b"2", 0, properties={c.TOPIC_ALIAS: 2}))
    assert messages[0].topic == "long/topic/name"
    # Re-mapping an alias replaces it.
    decoder.feed(c.encode_publish("other", b"3", 0, properties={c.TOPIC_ALIAS: 2}))
    messages, _ = decoder.feed(c.encode_publish("", b"4", 0, properties={c.TOPIC_ALIAS: 2}))
    assert messages[0].topic == "other"
