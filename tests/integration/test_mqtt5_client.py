"""Mqtt5Client and MqttSession against a real Mosquitto (/usr/sbin/mosquitto, 2.0.x)."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import itertools
import socket
import struct
import subprocess
import termios
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import TypedDict, Unpack

import pytest

from gateway.ingress import mqtt5_codec as codec
from gateway.ingress.mqtt5 import (
    InboundMessage,
    Mqtt5Client,
    MqttConnectError,
    MqttConnectionLost,
    MqttError,
    MqttProtocolError,
    MqttTimeoutError,
    Will,
)
from gateway.ingress.mqtt_session import MqttSession

pytestmark = pytest.mark.integration

MOSQUITTO = "/usr/sbin/mosquitto"
_ids = itertools.count(1)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Broker:
    """One Mosquitto process on 127.0.0.1:port; can be stopped and started again."""

    def __init__(self, directory: Path, port: int, extra_config: str = "") -> None:
        self.port = port
        self.config = directory / "mosquitto.conf"
        self.config.write_text(
            f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
            # Started as root, Mosquitto would switch to user "mosquitto", who cannot read
            # files in pytest's private tmp_path (acl_file); without root this is ignored.
            f"user root\n{extra_config}"
        )
        self.log = directory / "mosquitto.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [MOSQUITTO, "-c", str(self.config)], stdout=log, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mosquitto exited: {self.log.read_text()}")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), 0.2):
                return
            time.sleep(0.02)  # paces the poll for the listening port (a real process starting)
        raise RuntimeError("mosquitto did not start listening")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.proc = None


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    b = Broker(tmp_path, _free_port())
    b.start()
    yield b
    b.stop()


@pytest.fixture
def acl_broker(tmp_path: Path) -> Iterator[Broker]:
    acl = tmp_path / "acl"
    acl.write_text("topic readwrite ok/#\ntopic read denied/#\n")
    b = Broker(tmp_path, _free_port(), f"acl_file {acl}\n")
    b.start()
    yield b
    b.stop()


class Inbox:
    """on_batch target: remembers batches; optionally acks each batch through `client`."""

    def __init__(self) -> None:
        self.batches: list[list[InboundMessage]] = []
        self.client: Mqtt5Client | None = None
        self.auto_ack = False

    def __call__(self, batch: list[InboundMessage]) -> None:
        self.batches.append(batch)
        if self.auto_ack and self.client is not None:
            self.client.ack(batch)

    @property
    def messages(self) -> list[InboundMessage]:
        return [m for batch in self.batches for m in batch]

    async def wait_for(self, count: int, timeout: float = 10.0) -> list[InboundMessage]:
        await _until(lambda: len(self.messages) >= count, timeout)
        return self.messages


async def _until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    for _ in range(int(timeout / 0.01)):
        if condition():
            return
        await asyncio.sleep(0.01)  # paces the poll of a condition; never proves an absence
    raise TimeoutError(f"condition not met within {timeout}s")


def _unread_bytes(client: Mqtt5Client) -> int:
    """Bytes that arrived in the client's socket and were not read yet (FIONREAD)."""
    conn = client._conn  # private on purpose: the socket is not part of the client's API
    assert conn is not None and conn.transport is not None
    fd = conn.transport.get_extra_info("socket").fileno()
    unread: int = struct.unpack("i", fcntl.ioctl(fd, termios.FIONREAD, b"\0\0\0\0"))[0]
    return unread


class ClientOptions(TypedDict, total=False):
    """Mqtt5Client's optional settings the tests vary."""

    clean_start: bool
    session_expiry_s: int
    keepalive_s: int
    will: Will
    topic_alias_maximum: int


def _client(
    broker: Broker, inbox: Inbox | None = None, *, client_id: str = "", **options: Unpack[ClientOptions]
) -> Mqtt5Client:
    client = Mqtt5Client(
        host="127.0.0.1",
        port=broker.port,
        client_id=client_id or f"test-{next(_ids)}",
        on_batch=inbox if inbox is not None else (lambda batch: None),
        **options,
    )
    if inbox is not None:
        inbox.client = client
    return client


@contextlib.asynccontextmanager
async def _connected(client: Mqtt5Client) -> AsyncIterator[Mqtt5Client]:
    await client.connect()
    try:
        yield client
    finally:
        await client.disconnect()


async def _nothing_before_sentinel(broker: Broker, inbox: Inbox, topic: str, already: int = 0) -> None:
    """`inbox` got no message after its first `already` but a sentinel published now to `topic`.

    Proves an absence without waiting out a timeout: Mosquitto handles each client's packets in
    order and writes to a subscriber in order, and it resends a resumed session's messages while
    accepting the CONNECT. Anything the subscriber was going to get is therefore ahead of a
    message published after that (PUBACKed, so routed) on its TCP stream.
    """
    async with _connected(_client(broker)) as pub:
        assert await pub.publish(topic, b"sentinel") < 0x80
    messages = await inbox.wait_for(already + 1)
    assert [(m.topic, m.payload) for m in messages[already:]] == [(topic, b"sentinel")]


async def test_20k_qos1_batched_acked_not_redelivered(broker: Broker) -> None:
    inbox = Inbox()
    inbox.auto_ack = True
    sub = _client(broker, inbox, client_id="bulk-sub", session_expiry_s=60)
    assert await sub.connect() is False
    assert await sub.subscribe([("t/#", 1)]) == [1]
    async with _connected(_client(broker)) as pub:
        codes = await asyncio.gather(*(pub.publish(f"t/{i % 100}", b"%06d" % i) for i in range(20_000)))
    assert set(codes) == {0}
    messages = await inbox.wait_for(20_000)
    assert sorted(m.payload for m in messages) == [b"%06d" % i for i in range(20_000)]
    assert all(m.qos == 1 and m.generation == sub.generation for m in messages)
    assert max(len(b) for b in inbox.batches) > 1, "expected several messages per data_received"
    await sub.disconnect()
    assert await sub.wait_closed() is None

    again = Inbox()
    sub2 = _client(broker, again, client_id="bulk-sub", session_expiry_s=60)
    async with _connected(sub2):
        assert sub2.connected and sub2.generation > sub.generation
        await _nothing_before_sentinel(broker, again, "t/sentinel")  # acked: none comes again


async def test_deferred_ack_redelivery(broker: Broker) -> None:
    def subscriber(inbox: Inbox) -> Mqtt5Client:
        return _client(broker, inbox, client_id="deferred", session_expiry_s=60)

    first = Inbox()
    sub = subscriber(first)
    assert await sub.connect() is False
    await sub.subscribe([("d/#", 1)])
    async with _connected(_client(broker)) as pub:
        for i in range(50):
            await pub.publish(f"d/{i}", b"m%d" % i)
    received = await first.wait_for(50)
    sub.abort()  # crash before commit: nothing was acknowledged
    cause = await sub.wait_closed()
    assert isinstance(cause, MqttConnectionLost)
    assert not sub.connected

    second = Inbox()
    sub = subscriber(second)
    assert await sub.connect() is True
    redelivered = await second.wait_for(50)
    assert sorted(m.payload for m in redelivered) == sorted(m.payload for m in received)
    sub.ack(received)  # previous generation: must be skipped, not sent with the new packet ids
    # A round trip on the same TCP stream: a PUBACK the line above wrongly wrote is now with the
    # broker (it handles a client's packets in order), so the redelivery below would miss it.
    assert await sub.publish("elsewhere/flush", b"x") == 0x10
    sub.abort()
    await sub.wait_closed()

    third = Inbox()
    sub = subscriber(third)
    assert await sub.connect() is True
    redelivered = await third.wait_for(50)
    assert sorted(m.payload for m in redelivered) == sorted(m.payload for m in received)
    sub.ack(redelivered)
    sub.ack(redelivered)  # double ack is a no-op
    await sub.disconnect()  # DISCONNECT follows the PUBACKs on the same TCP stream

    fourth = Inbox()
    sub = subscriber(fourth)
    async with _connected(sub):
        await _nothing_before_sentinel(broker, fourth, "d/sentinel")  # all acked: none comes again


async def test_last_will(broker: Broker) -> None:
    watcher_inbox = Inbox()
    async with _connected(_client(broker, watcher_inbox)) as watcher:
        await watcher.subscribe([("will/#", 1)])
        will = Will("will/car-1", b"gone", qos=1)

        car = _client(broker, will=will, client_id="car-1", clean_start=True, session_expiry_s=0)
        await car.connect()
        car.abort()
        messages = await watcher_inbox.wait_for(1)
        assert [(m.topic, m.payload) for m in messages] == [("will/car-1", b"gone")]

        car = _client(broker, will=will, client_id="car-1", clean_start=True, session_expiry_s=0)
        await car.connect()
        await car.disconnect()
        assert await car.wait_closed() is None
        # The broker handled the DISCONNECT (and discarded the will) before it closed the link.
        await _nothing_before_sentinel(broker, watcher_inbox, "will/sentinel", already=1)


async def test_connect_to_closed_port() -> None:
    port = _free_port()
    client = Mqtt5Client(host="127.0.0.1", port=port, client_id="x", on_batch=lambda b: None)
    with pytest.raises(MqttConnectError, match=f"127.0.0.1:{port}") as info:
        await client.connect(timeout=2)
    assert info.value.reason_code is None
    assert not client.connected


async def test_publish_reason_codes_and_acl(acl_broker: Broker) -> None:
    inbox = Inbox()
    async with _connected(_client(acl_broker, inbox)) as client:
        assert await client.subscribe([("ok/#", 1), ("denied/#", 1)]) == [1, 1]
        assert await client.publish("ok/1", b"a") == 0
        # Mosquitto 2.0.11 answers a QoS 1 PUBLISH the ACL denies with PUBACK 0x87.
        assert await client.publish("denied/1", b"b") == 0x87
        assert await client.publish("ok/2", b"c", qos=0) == 0
        messages = await inbox.wait_for(2)
        assert [(m.topic, m.qos) for m in messages[:2]] == [("ok/1", 1), ("ok/2", 0)]
        assert messages[1].packet_id == 0
        await _nothing_before_sentinel(acl_broker, inbox, "ok/sentinel", already=2)  # denied/1 never
        # Mosquitto 2.0.11 grants a subscription to topics the ACL does not let us read; it
        # just never delivers them (so MqttSubscribeError cannot be provoked by an ACL).
        assert await client.subscribe([("secret/#", 1)]) == [1]
        assert client.connected


async def test_publish_without_subscribers(broker: Broker) -> None:
    async with _connected(_client(broker)) as client:
        # Mosquitto 2.0.11 answers 0x10 (no matching subscribers): a success code (< 0x80).
        assert await client.publish("nobody/listens", b"x") == 0x10


async def test_session_takeover_ends_the_old_connection(broker: Broker) -> None:
    first = _client(broker, client_id="same")
    await first.connect()
    async with _connected(_client(broker, client_id="same")):
        cause = await asyncio.wait_for(first.wait_closed(), 5)
    # Mosquitto 2.0.11 closes the old connection without a DISCONNECT 0x8e (session taken over).
    assert isinstance(cause, MqttConnectionLost)
    assert not first.connected


async def test_server_disconnect_reason_code(broker: Broker) -> None:
    client = _client(broker)
    await client.connect()
    # Provoke a DISCONNECT: a PUBLISH using a topic alias above the broker's maximum (10).
    bad = codec.encode_publish("t", b"x", 0, properties={codec.TOPIC_ALIAS: 50})
    assert client._conn is not None
    client._conn.send(bad)  # private on purpose: there is no public way to send an invalid packet
    cause = await asyncio.wait_for(client.wait_closed(), 5)
    assert isinstance(cause, MqttConnectionLost)
    assert cause.reason_code == 0x94
    assert "DISCONNECT 0x94 (Topic alias invalid)" in str(cause)
    assert not client.connected
    with pytest.raises(MqttConnectionLost):
        await client.publish("t", b"x")


async def test_publish_larger_than_the_broker_allows(tmp_path: Path) -> None:
    b = Broker(tmp_path, _free_port(), "max_packet_size 100\n")
    b.start()
    try:
        async with _connected(_client(b)) as client:
            with pytest.raises(MqttError, match="exceeds the broker's 100"):
                await client.publish("t", b"x" * 200)
            assert await client.publish("t", b"x" * 10) == 0x10
    finally:
        b.stop()


async def test_keepalive_pings_keep_an_idle_connection(broker: Broker) -> None:
    async with _connected(_client(broker, keepalive_s=1)) as client:
        # Positive evidence instead of waiting for an absence: the client pinged and the broker
        # answered, twice, across more than Mosquitto's 1.5 x keepalive (after which it drops a
        # silent client); the connection is then still up and usable.
        await _until(lambda: client.pings_answered >= 2)
        assert client.connected
        assert await client.publish("k/1", b"x") == 0x10  # no subscriber


async def test_pause_and_resume_reading(broker: Broker) -> None:
    inbox = Inbox()
    inbox.auto_ack = True
    async with _connected(_client(broker, inbox)) as sub, _connected(_client(broker)) as pub:
        await sub.subscribe([("p/#", 0)])
        sub.pause_reading()
        topics = [f"p/{i}" for i in range(10)]
        for topic in topics:
            await pub.publish(topic, b"x", qos=0)
        # Every message is in sub's socket, unread: a client that kept reading would have taken
        # them as they came and the count would never get there (the test fails by timeout).
        size = sum(len(codec.encode_publish(t, b"x", 0)) for t in topics)
        await _until(lambda: _unread_bytes(sub) >= size)
        assert await pub.publish("elsewhere/turn", b"x") == 0x10  # a round trip: many loop turns
        assert inbox.messages == [] and _unread_bytes(sub) >= size
        sub.resume_reading()
        await inbox.wait_for(10)


async def test_session_reconnects_after_broker_restart(broker: Broker) -> None:
    inbox = Inbox()
    inbox.auto_ack = True
    events: list[str] = []

    attempts: list[str] = []

    def make_client() -> Mqtt5Client:
        attempts.append("connect")
        return _client(broker, inbox, client_id="session", keepalive_s=5)

    session = MqttSession(
        make_client=make_client,
        subscriptions=[("s/#", 1)],
        on_connected=lambda present: events.append(f"connected:{present}"),
        on_disconnected=lambda cause: events.append(f"disconnected:{type(cause).__name__}"),
        on_reconnect=lambda: events.append("reconnect"),
        backoff_base_s=0.05,
        backoff_max_s=0.5,
    )
    await session.start()
    supervisor = asyncio.create_task(session.run(), name="mqtt-session.supervise")
    try:
        assert session.connected
        first_client = session.client
        assert await session.publish("s/1", b"before") == 0
        await inbox.wait_for(1)

        broker.stop()
        await _until(lambda: not session.connected)
        tried = len(attempts)
        await _until(lambda: len(attempts) >= tried + 3)  # a few failed attempts against the closed port
        broker.start()
        await _until(lambda: "reconnect" in events)
        assert session.connected and session.client is not first_client
        assert await session.publish("s/2", b"after") == 0
        messages = await inbox.wait_for(2)
        assert [m.payload for m in messages] == [b"before", b"after"]
        assert events[:3] == ["connected:False", "disconnected:MqttConnectionLost", "connected:False"]
        assert events.count("reconnect") == 1
    finally:
        await session.stop()
        await asyncio.wait_for(supervisor, 5)
    assert not session.connected
    assert events[-1] == "disconnected:NoneType"
    with pytest.raises(MqttConnectionLost):
        await session.publish("s/3", b"x")


async def test_session_stop_while_the_broker_is_down(broker: Broker) -> None:
    attempts: list[str] = []

    def make_client() -> Mqtt5Client:
        attempts.append("connect")
        return _client(broker, client_id="stopper")

    session = MqttSession(
        make_client=make_client, subscriptions=[("x/#", 0)], backoff_base_s=0.05, backoff_max_s=0.2
    )
    await session.start()
    supervisor = asyncio.create_task(session.run(), name="mqtt-session.supervise")
    broker.stop()
    await _until(lambda: len(attempts) >= 3)  # retrying with backoff
    started = time.monotonic()
    await session.stop()
    await asyncio.wait_for(supervisor, 2)
    assert time.monotonic() - started < 1.0
    # Nothing can try again: the supervisor has returned and the session left no task behind
    # (the only one still running is this test's own).
    assert [t for t in asyncio.all_tasks() if not t.done()] == [asyncio.current_task()]
    assert not session.connected


async def test_session_start_fails_fast_when_unreachable() -> None:
    port = _free_port()
    session = MqttSession(
        make_client=lambda: Mqtt5Client(host="127.0.0.1", port=port, client_id="x", on_batch=lambda b: None),
        subscriptions=[("t/#", 1)],
    )
    with pytest.raises(MqttConnectError, match=f"127.0.0.1:{port}"):
        await session.start(timeout=2)
    assert not session.connected


# ----------------------------------------------------------------------------------------------
# Behaviour Mosquitto cannot be made to show: a scripted fake broker on a local socket.


class FakeBroker:
    """Answers CONNECT with `connack` (+ `then`), records every packet the client sends."""

    def __init__(self, connack: bytes, then: bytes = b"") -> None:
        self.reply = connack + then
        self.decoder = codec.StreamDecoder()
        self.publishes: list[InboundMessage] = []
        self.others: list[tuple[int, bytes]] = []
        self.writer: asyncio.StreamWriter | None = None
        self.port = 0
        self.served = asyncio.Event()

    async def __aenter__(self) -> FakeBroker:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.server.close()
        if self.writer is not None:
            self.writer.close()
            await asyncio.wait_for(self.served.wait(), 5)
        await self.server.wait_closed()

    def client(
        self, on_batch: Callable[[list[InboundMessage]], None], **options: Unpack[ClientOptions]
    ) -> Mqtt5Client:
        return Mqtt5Client(host="127.0.0.1", port=self.port, client_id="fake", on_batch=on_batch, **options)

    def send(self, data: bytes) -> None:
        assert self.writer is not None
        self.writer.write(data)

    def kinds(self) -> list[int]:
        return [first >> 4 for first, _ in self.others]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writer = writer
        with contextlib.suppress(ConnectionError):
            while data := await reader.read(65536):
                messages, others = self.decoder.feed(data)
                self.publishes += messages
                self.others += others
                if any(first == 0x10 for first, _ in others):
                    writer.write(self.reply)
        writer.close()
        self.served.set()


CONNACK_OK = b"\x20\x03\x00\x00\x00"


async def test_fake_missing_pingresp_drops_the_connection() -> None:
    async with FakeBroker(CONNACK_OK) as fake:
        client = fake.client(lambda b: None, keepalive_s=1)
        await client.connect()
        cause = await asyncio.wait_for(client.wait_closed(), 5)
        assert isinstance(cause, MqttConnectionLost)
        assert cause.reason_code == 0x8D and "no PINGRESP" in str(cause)
        assert 12 in fake.kinds()  # PINGREQ was sent


async def test_fake_connack_refused() -> None:
    async with FakeBroker(b"\x20\x03\x00\x86\x00") as fake:
        client = fake.client(lambda b: None)
        with pytest.raises(MqttConnectError, match=rf"127.0.0.1:{fake.port}.*0x86") as info:
            await client.connect()
        assert info.value.reason_code == 0x86
        assert not client.connected


async def test_fake_connack_and_publishes_in_one_chunk_with_topic_aliases() -> None:
    connack = b"\x20\x0e\x01\x00\x0b\x12\x00\x05srv-1\x21\x00\x02"  # session present, id, recv max 2
    publishes = b"".join(
        [
            codec.encode_publish("cars/1/t", b"a", 1, packet_id=7, properties={codec.TOPIC_ALIAS: 5}),
            codec.encode_publish("", b"b", 1, packet_id=8, properties={codec.TOPIC_ALIAS: 5}),
            codec.encode_publish("cars/2/t", b"c", 0),
        ]
    )
    batches: list[list[InboundMessage]] = []
    async with FakeBroker(connack, publishes) as fake:
        client = fake.client(batches.append, topic_alias_maximum=5)
        assert await client.connect() is True
        assert client.client_id == "srv-1"
        assert len(batches) == 1  # CONNACK first, then one batch for the whole chunk
        assert [(m.topic, m.payload, m.packet_id) for m in batches[0]] == [
            ("cars/1/t", b"a", 7),
            ("cars/1/t", b"b", 8),
            ("cars/2/t", b"c", 0),
        ]
        client.ack(batches[0])
        await client.disconnect()
        await _until(lambda: 14 in fake.kinds())
        assert [(first, body) for first, body in fake.others if first >> 4 == 4] == [
            (0x40, b"\x00\x07"),
            (0x40, b"\x00\x08"),
        ]
        connect_body = fake.others[0][1]
        props, _ = codec.decode_properties(connect_body, 10)
        assert props[codec.TOPIC_ALIAS_MAXIMUM] == 5
        assert props[codec.RECEIVE_MAXIMUM] == 65535


async def test_fake_receive_maximum_limits_inflight_publishes() -> None:
    connack = b"\x20\x06\x00\x00\x03\x21\x00\x02"  # receive maximum 2
    async with FakeBroker(connack) as fake:
        client = fake.client(lambda b: None)
        await client.connect()
        tasks = [asyncio.create_task(client.publish(f"t/{i}", b"x")) for i in range(5)]
        await _until(lambda: len(fake.publishes) == 2)
        # QoS 0 is not limited by receive maximum: written after the five QoS 1 publishes were
        # started, it would arrive behind a third one had the client not held it back.
        assert await client.publish("sentinel", b"", qos=0) == 0
        await _until(lambda: len(fake.publishes) == 3)
        assert [m.topic for m in fake.publishes] == ["t/0", "t/1", "sentinel"]
        del fake.publishes[2]
        fake.send(codec.encode_puback(fake.publishes[0].packet_id, 0x87))
        await _until(lambda: len(fake.publishes) == 3)
        for msg in fake.publishes[1:]:
            fake.send(codec.encode_puback(msg.packet_id))
        await _until(lambda: len(fake.publishes) == 5)
        for msg in fake.publishes[3:]:
            fake.send(codec.encode_puback(msg.packet_id))
        assert await asyncio.gather(*tasks) == [0x87, 0, 0, 0, 0]
        assert len({m.packet_id for m in fake.publishes}) == 5
        await client.disconnect()


async def test_fake_publish_timeout_starts_once_written_not_while_queued() -> None:
    """`timeout` is about the broker's answer: a publish queued behind a full receive maximum
    gets its whole timeout once written. Timings are read off other publishes' timeouts (each
    one an event), never slept for: `late` is acked after its start + 1.5 s (its whole-call
    deadline before the fix), well within 1.5 s of being written."""
    connack = b"\x20\x06\x00\x00\x03\x21\x00\x01"  # receive maximum 1
    async with FakeBroker(connack) as fake:
        client = fake.client(lambda b: None)
        await client.connect()
        first = asyncio.create_task(client.publish("t/first", b"x", timeout=30))
        await _until(lambda: len(fake.publishes) == 1)
        queued_out = asyncio.create_task(client.publish("t/queued-out", b"x", timeout=1.0))
        late = asyncio.create_task(client.publish("t/late", b"x", timeout=1.5))
        with pytest.raises(MqttTimeoutError, match=r"no free in-flight slot.*receive maximum 1\b"):
            await queued_out  # our own queue is bounded too, and says so (1.0 s after the start)
        fake.send(codec.encode_puback(fake.publishes[0].packet_id))
        assert await first == 0
        await _until(lambda: len(fake.publishes) == 2)
        assert fake.publishes[1].topic == "t/late"
        behind = asyncio.create_task(client.publish("t/behind", b"x", timeout=1.0))
        with pytest.raises(MqttTimeoutError, match="no free in-flight slot"):
            await behind  # 2.0 s after `late` started: past its old whole-call deadline
        assert not late.done()
        fake.send(codec.encode_puback(fake.publishes[1].packet_id))
        assert await late == 0
        assert [m.topic for m in fake.publishes] == ["t/first", "t/late"]  # the timed out never went out
        await client.disconnect()


async def test_fake_publish_fails_when_the_connection_drops() -> None:
    async with FakeBroker(CONNACK_OK) as fake:
        client = fake.client(lambda b: None)
        await client.connect()
        task = asyncio.create_task(client.publish("t", b"x"))
        await _until(lambda: len(fake.publishes) == 1)
        assert fake.writer is not None
        fake.writer.close()
        with pytest.raises(MqttConnectionLost):
            await task


async def test_fake_qos2_from_broker_is_refused() -> None:
    async with FakeBroker(CONNACK_OK) as fake:
        batches: list[list[InboundMessage]] = []
        client = fake.client(batches.append)
        await client.connect()
        fake.send(codec.encode_publish("t", b"x", 2, packet_id=1))
        cause = await asyncio.wait_for(client.wait_closed(), 5)
        assert isinstance(cause, MqttProtocolError) and cause.reason_code == 0x9B
        assert batches == []
        await _until(lambda: (0xE0, b"\x9b\x00") in fake.others)


async def test_fake_on_batch_error_drops_the_connection() -> None:
    def explode(batch: list[InboundMessage]) -> None:
        raise RuntimeError("commit failed")

    async with FakeBroker(CONNACK_OK, codec.encode_publish("t", b"x", 1, packet_id=1)) as fake:
        client = fake.client(explode)
        await client.connect()
        cause = await asyncio.wait_for(client.wait_closed(), 5)
        assert isinstance(cause, RuntimeError) and str(cause) == "commit failed"
        assert not any(first >> 4 == 4 for first, _ in fake.others)  # not acknowledged
