"""load/frames.py: the generator's MQTT 5 encoder, checked against byte-exact expectations
(OASIS MQTT 5.0) and against paho-mqtt's own decoder (an independent implementation)."""

from __future__ import annotations

from typing import Any

import pytest
from paho.mqtt._packet import decode_publish
from paho.mqtt.enums import MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties as PahoProperties
from paho.mqtt.properties import VariableByteIntegers

from load import frames

VIN = "WP0ZZZY15PS696058"


@pytest.mark.parametrize(
    ("n", "encoded"),
    [
        (0, b"\x00"), (127, b"\x7f"), (128, b"\x80\x01"), (16_383, b"\xff\x7f"), (16_384, b"\x80\x80\x01"),
        (2_097_151, b"\xff\xff\x7f"), (2_097_152, b"\x80\x80\x80\x01"), (268_435_455, b"\xff\xff\xff\x7f"),
    ],
)
def test_variable_byte_integer_matches_the_spec_table(n: int, encoded: bytes) -> None:
    assert frames.varint(n) == encoded
    assert paho_varint(encoded) == (n, len(encoded))


@pytest.mark.parametrize("n", [-1, 268_435_456])
def test_variable_byte_integer_out_of_range_is_refused(n: int) -> None:
    with pytest.raises(ValueError):
        frames.varint(n)


def paho_varint(buf: bytes) -> tuple[int, int]:
    """(value, bytes used) as paho decodes a variable byte integer."""
    value, used = VariableByteIntegers.decode(buf)  # type: ignore[no-untyped-call]  # paho has no hints
    return int(value), int(used)


def paho_properties(packet_type: int, buf: bytes) -> tuple[Any, int]:
    """Properties decoded by paho: (the properties object, bytes used)."""
    props: Any = PahoProperties(packet_type)  # type: ignore[no-untyped-call]  # paho has no hints
    _, used = props.unpack(buf)
    return props, used


def _split(frame: bytes) -> tuple[int, bytes]:
    """(first byte, body) after checking the remaining length covers exactly the body."""
    length, used = paho_varint(frame[1:])
    body = frame[1 + used:]
    assert len(body) == length
    return frame[0], body


@pytest.mark.parametrize("size", [0, 1, 90, 91, 200, 16_300, 16_400, 70_000])
@pytest.mark.parametrize("qos", [0, 1])
def test_publish_decodes_with_paho(size: int, qos: int) -> None:
    payload = bytes(range(256)) * (size // 256) + bytes(size % 256)
    topic = f"v1/vehicles/{VIN}/up"
    frame = frames.publish(topic, payload, qos=qos, packet_id=513 if qos else 0)
    first, body = _split(frame)
    pkt = decode_publish(first, body, MQTTProtocolVersion.MQTTv5)
    assert (pkt.topic, pkt.qos, pkt.mid, pkt.payload, pkt.dup, pkt.retain) == (
        topic.encode(), qos, 513 if qos else 0, payload, False, False)
    assert first >> 4 == 3


@pytest.mark.parametrize("size", [10, 95, 96, 16_000, 20_000])
@pytest.mark.parametrize("qos", [0, 1])
def test_publish_template_is_byte_identical_to_publish(size: int, qos: int) -> None:
    topic = f"v1/vehicles/{VIN}/up"
    payload = b"x" * size
    tmpl = frames.PublishTemplate(topic, qos)
    assert tmpl.frame(payload, 7) == frames.publish(topic, payload, qos=qos, packet_id=7 if qos else 0)


def test_publish_exact_bytes() -> None:
    assert frames.publish("a/b", b"hi") == b"\x30\x08\x00\x03a/b\x00hi"
    assert frames.publish("a/b", b"hi", qos=1, packet_id=10) == b"\x32\x0a\x00\x03a/b\x00\x0a\x00hi"


def test_publish_qos1_needs_a_packet_id() -> None:
    with pytest.raises(ValueError):
        frames.publish("t", b"", qos=1)


def test_connect_exact_bytes_without_will() -> None:
    frame = frames.connect("car", keepalive=60)
    # CONNECT, remaining length 16: "MQTT", version 5, clean start, keepalive 60, no properties,
    # client id "car".
    assert frame == b"\x10\x10\x00\x04MQTT\x05\x02\x00\x3c\x00\x00\x03car"


def test_connect_with_will_credentials_and_properties() -> None:
    will = frames.Will(f"v1/vehicles/{VIN}/will", b"\x01\x02\x03", qos=1,
                       properties=frames.Properties(will_delay=5, content_type="application/x-protobuf"))
    frame = frames.connect(VIN, keepalive=600, will=will, username="gateway", password=b"secret",
                           properties=frames.Properties(session_expiry=30, receive_maximum=100))
    first, body = _split(frame)
    assert first == 0x10
    assert body[:7] == b"\x00\x04MQTT\x05"
    flags = body[7]
    assert flags == 0x80 | 0x40 | 0x08 | 0x04 | 0x02  # user, password, will QoS 1, will, clean start
    assert body[8:10] == (600).to_bytes(2, "big")
    props, used = paho_properties(PacketTypes.CONNECT, body[10:])
    assert (props.SessionExpiryInterval, props.ReceiveMaximum) == (30, 100)
    rest = body[10 + used:]
    assert rest[:2 + len(VIN)] == len(VIN).to_bytes(2, "big") + VIN.encode()
    rest = rest[2 + len(VIN):]
    will_props, used = paho_properties(PacketTypes.WILLMESSAGE, rest)
    assert (will_props.WillDelayInterval, will_props.ContentType) == (5, "application/x-protobuf")
    rest = rest[used:]
    tlen = int.from_bytes(rest[:2], "big")
    assert rest[2:2 + tlen] == will.topic.encode()
    rest = rest[2 + tlen:]
    assert rest[:5] == b"\x00\x03\x01\x02\x03"
    assert rest[5:] == b"\x00\x07gateway\x00\x06secret"


def test_disconnect_and_ping() -> None:
    assert frames.disconnect() == b"\xe0\x00"
    assert frames.disconnect(0x04) == b"\xe0\x02\x04\x00"  # disconnect with will message
    assert frames.PINGREQ == b"\xc0\x00"
    assert frames.puback(258) == b"\x40\x02\x01\x02"


def test_reader_splits_a_stream_cut_anywhere() -> None:
    stream = (b"\x20\x03\x00\x00\x00"  # CONNACK, success, no properties
              + frames.puback(9)
              + b"\xd0\x00"  # PINGRESP
              + frames.publish("v1/vehicles/X/down", b"p" * 300, qos=1, packet_id=4)
              + b"\xe0\x01\x8e")  # DISCONNECT: session taken over
    for cut in range(1, len(stream)):
        reader = frames.FrameReader()
        packets = reader.feed(stream[:cut]) + reader.feed(stream[cut:])
        assert [p.kind for p in packets] == [frames.CONNACK, frames.PUBACK, frames.PINGRESP, frames.PUBLISH,
                                             frames.DISCONNECT]
    connack, puback, _, publish, disconnect = packets
    assert connack.reason_code == 0
    assert (puback.packet_id, puback.reason_code) == (9, 0)
    assert frames.parse_publish(publish) == ("v1/vehicles/X/down", 4, b"p" * 300)
    assert disconnect.reason_code == 0x8E


def test_reader_refuses_a_remaining_length_over_four_bytes() -> None:
    with pytest.raises(ValueError):
        frames.FrameReader().feed(b"\x30\xff\xff\xff\xff\x01")


def test_subscribe_exact_bytes() -> None:
    # MQTT 5.0 3.8: fixed header 0x82, packet id, no properties, the filter, options = max QoS.
    assert frames.subscribe(10, "a/b", qos=1) == b"\x82\x09\x00\x0a\x00\x00\x03a/b\x01"
    topic = f"v1/vehicles/{VIN}/down"
    first, body = _split(frames.subscribe(65535, topic, qos=0))
    assert first == 0x82
    assert body == b"\xff\xff\x00" + len(topic).to_bytes(2, "big") + topic.encode() + b"\x00"


@pytest.mark.parametrize(("packet_id", "qos"), [(0, 1), (65_536, 1), (1, 3)])
def test_subscribe_refuses_a_bad_packet_id_or_qos(packet_id: int, qos: int) -> None:
    with pytest.raises(ValueError):
        frames.subscribe(packet_id, "a/b", qos=qos)
