"""A small, fast MQTT 5.0 client for the ingress path, as an asyncio.Protocol.

Two things set it apart from general-purpose clients:

* Batched receive: every complete PUBLISH in one `data_received` chunk reaches the application
  in a single `on_batch(list)` call, synchronously; no task, no queue, no future per message.
* Deferred acknowledgement: a QoS 1 PUBACK is sent only when the application calls `ack()`,
  i.e. after it durably committed the batch. If the gateway dies first, the broker redelivers
  (persistent session: `clean_start=False` and a session expiry).

Every connection gets a process-wide unique *generation*; a message remembers the generation it
arrived on and `ack()` ignores messages of an older connection, whose packet ids mean nothing
(or something else) on the current one. The broker redelivers those anyway.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import ssl
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from typing import Any, cast

from gateway.ingress import mqtt5_codec as codec
from gateway.ingress.mqtt5_codec import ConnAck, InboundMessage, MalformedPacket, Will

__all__ = [
    "InboundMessage",
    "Mqtt5Client",
    "MqttConnectError",
    "MqttConnectionLost",
    "MqttError",
    "MqttProtocolError",
    "MqttSubscribeError",
    "MqttTimeoutError",
    "Will",
]

log = logging.getLogger(__name__)

_generations = itertools.count(1)  # shared by all clients: a generation names one connection
_DISCONNECT_GRACE_S = 5.0


class MqttError(Exception):
    """Base of every error raised by this client."""


class MqttConnectError(MqttError):
    """The broker is unreachable, timed out, or refused the connection (`reason_code` set)."""

    def __init__(self, message: str, reason_code: int | None = None) -> None:
        super().__init__(message)
        self.reason_code = reason_code


class MqttConnectionLost(MqttError):
    """The connection ended; `reason_code` is set when the broker sent a DISCONNECT."""

    def __init__(self, message: str, reason_code: int | None = None) -> None:
        super().__init__(message)
        self.reason_code = reason_code


class MqttProtocolError(MqttConnectionLost):
    """The broker sent something that is not valid MQTT 5 (we disconnected it)."""


class MqttSubscribeError(MqttError):
    """SUBACK refused at least one filter; `reason_codes` holds one code per filter."""

    def __init__(self, message: str, reason_codes: list[int]) -> None:
        super().__init__(message)
        self.reason_codes = reason_codes


class MqttTimeoutError(MqttError, TimeoutError):
    """No SUBACK / PUBACK within the timeout."""


class _Connection(asyncio.Protocol):
    """One TCP connection: the protocol callbacks plus all per-connection state."""

    def __init__(self, client: Mqtt5Client, generation: int) -> None:
        self.loop = asyncio.get_running_loop()
        self.where = client.address
        self.client_id = client._client_id
        self.on_batch = client._on_batch
        self.generation = generation
        self.decoder = codec.StreamDecoder(generation, client._topic_alias_maximum)
        self.transport: asyncio.Transport | None = None
        self.connack: asyncio.Future[ConnAck] = self.loop.create_future()
        self.closed: asyncio.Future[BaseException | None] = self.loop.create_future()
        self.connected = False  # CONNACK accepted and nothing ended or started ending it
        self.closing = False  # no more writes: we are closing or the connection is gone
        self.cause: BaseException | None = None
        self.cause_set = False
        self.keepalive_s = client._keepalive_s
        self.keepalive_task: asyncio.Task[None] | None = None
        self.last_write = self.loop.time()
        self.ping_sent_at = 0.0  # oldest unanswered PINGREQ (0: none)
        self.pings_answered = 0  # PINGRESPs on this connection (diagnostics, tests)
        self.reading_paused = False
        self.server_receive_maximum = 65535
        self.server_maximum_packet_size = 0  # 0: no limit announced
        self.pubacks: dict[int, asyncio.Future[int]] = {}
        self.subacks: dict[int, asyncio.Future[list[int]]] = {}
        self.slot_waiters: deque[asyncio.Future[None]] = deque()
        self.drain_waiters: list[asyncio.Future[None]] = []
        self.write_paused = False
        self.last_packet_id = 0

    # -- asyncio.Protocol ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        try:
            messages, others = self.decoder.feed(data)
            for first, body in others:
                self._control(first, body)
        except MalformedPacket as exc:
            self.fail(MqttProtocolError(f"{self.where}: {exc}", exc.reason_code), exc.reason_code)
            return
        if messages:
            try:
                self.on_batch(messages)
            except Exception as exc:
                log.exception("on_batch failed; dropping the connection to %s", self.where)
                self.fail(exc)

    def eof_received(self) -> bool | None:
        return None  # let the transport close; connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        self.connected = False
        self.closing = True
        if not self.cause_set:
            detail = f"lost: {exc}" if exc else "closed by the broker"
            lost = MqttConnectionLost(f"connection to {self.where} {detail}")
            lost.__cause__ = exc
            self.set_cause(lost)
        cause = self.cause
        err = cause if isinstance(cause, MqttConnectionLost) else None
        if err is None:
            err = MqttConnectionLost(f"connection to {self.where} ended: {cause or 'disconnected'}")
        pending: list[asyncio.Future[Any]] = [self.connack, *self.pubacks.values()]
        pending += [*self.subacks.values(), *self.slot_waiters, *self.drain_waiters]
        for fut in pending:
            if not fut.done():
                fut.set_exception(err)
        if self.keepalive_task is not None:
            self.keepalive_task.cancel()
        if not self.closed.done():
            self.closed.set_result(cause)

    def pause_writing(self) -> None:
        self.write_paused = True

    def resume_writing(self) -> None:
        self.write_paused = False
        for fut in self.drain_waiters:
            if not fut.done():
                fut.set_result(None)
        self.drain_waiters.clear()

    # -- writing and closing ---------------------------------------------------------------

    def send(self, packet: bytes) -> bool:
        if self.closing or self.transport is None:
            return False
        self.transport.write(packet)
        self.last_write = self.loop.time()
        return True

    def require_open(self) -> None:
        if self.closing:
            raise MqttConnectionLost(f"not connected to {self.where}")

    async def drain(self) -> None:
        if self.write_paused and not self.closing:
            fut: asyncio.Future[None] = self.loop.create_future()
            self.drain_waiters.append(fut)
            await fut

    def set_cause(self, cause: BaseException | None) -> None:
        if not self.cause_set:
            self.cause, self.cause_set = cause, True

    def fail(self, cause: BaseException, disconnect_reason: int | None = None) -> None:
        """End the connection because of `cause`, with a DISCONNECT if a reason is given."""
        self.set_cause(cause)
        if disconnect_reason is not None and self.connected:
            self.send(codec.encode_disconnect(disconnect_reason))
        self.close()

    def close(self) -> None:
        self.connected = False
        self.closing = True
        if self.transport is not None:
            self.transport.close()

    def abort(self, cause: BaseException | None) -> None:
        self.set_cause(cause)
        self.connected = False
        self.closing = True
        if self.transport is not None:
            self.transport.abort()
        elif not self.closed.done():  # never connected: nothing will call connection_lost
            self.connection_lost(None)

    # -- inbound control packets -----------------------------------------------------------

    def _control(self, first: int, body: bytes) -> None:
        kind = first >> 4
        if kind == codec.PUBACK:
            packet_id, reason = codec.decode_puback(body)
            fut = self.pubacks.pop(packet_id, None)
            if fut is None:
                log.debug("%s: PUBACK for unknown packet id %d", self.where, packet_id)
                return
            if not fut.done():
                fut.set_result(reason)
            while self.slot_waiters:  # one in-flight slot became free: wake one publisher
                waiter = self.slot_waiters.popleft()
                if not waiter.done():
                    waiter.set_result(None)
                    break
        elif kind == codec.PINGRESP:
            self.ping_sent_at = 0.0
            self.pings_answered += 1
        elif kind == codec.SUBACK:
            packet_id, codes, _ = codec.decode_suback(body)
            sub = self.subacks.pop(packet_id, None)
            if sub is not None and not sub.done():
                sub.set_result(codes)
        elif kind == codec.CONNACK:
            if self.connack.done():
                raise MalformedPacket("second CONNACK", 0x82)
            self._connack(codec.decode_connack(body))
        elif kind == codec.DISCONNECT:
            reason, props = codec.decode_disconnect(body)
            text = props.get(codec.REASON_STRING)
            detail = f": {text}" if isinstance(text, str) else ""
            message = f"{self.where} sent DISCONNECT {codec.reason_name(reason)}{detail}"
            self.set_cause(MqttConnectionLost(message, reason))
            self.close()
        else:
            raise MalformedPacket(f"unexpected packet type {kind}", 0x82)

    def _connack(self, connack: ConnAck) -> None:
        props = connack.properties
        if connack.reason_code < 0x80:
            self.connected = True
            value = props.get(codec.RECEIVE_MAXIMUM)
            if isinstance(value, int) and value > 0:
                self.server_receive_maximum = value
            value = props.get(codec.MAXIMUM_PACKET_SIZE)
            if isinstance(value, int):
                self.server_maximum_packet_size = value
            value = props.get(codec.SERVER_KEEP_ALIVE)
            if isinstance(value, int):
                self.keepalive_s = value
            if self.keepalive_s > 0:
                self.keepalive_task = self.loop.create_task(
                    self._keepalive(), name=f"mqtt5.keepalive[{self.client_id}]"
                )
        self.connack.set_result(connack)

    async def _keepalive(self) -> None:
        """PINGREQ when nothing was written for keepalive/2; give up when the oldest
        unanswered PINGREQ is older than keepalive (not counted while reading is paused)."""
        interval = float(self.keepalive_s)
        half = interval / 2
        while not self.closing:
            now = self.loop.time()
            if self.ping_sent_at and not self.reading_paused and now - self.ping_sent_at > interval:
                self.abort(MqttConnectionLost(f"no PINGRESP from {self.where} within {interval:g}s", 0x8D))
                return
            if now - self.last_write >= half:
                self.send(codec.PINGREQ)
                if not self.ping_sent_at:
                    self.ping_sent_at = now
            await asyncio.sleep(max(0.05, min(half, self.last_write + half - self.loop.time())))

    # -- outbound packet ids ---------------------------------------------------------------

    def next_packet_id(self) -> int:
        packet_id = self.last_packet_id
        while True:
            packet_id = packet_id % 0xFFFF + 1
            if packet_id not in self.pubacks and packet_id not in self.subacks:
                self.last_packet_id = packet_id
                return packet_id

    async def reserve_publish(self) -> tuple[int, asyncio.Future[int]]:
        """A packet id and its PUBACK future, once the server's receive maximum allows."""
        while len(self.pubacks) >= self.server_receive_maximum:
            self.require_open()
            waiter: asyncio.Future[None] = self.loop.create_future()
            self.slot_waiters.append(waiter)
            try:
                await waiter
            except asyncio.CancelledError:
                if waiter.done() and not waiter.cancelled():  # woken, then cancelled: pass it on
                    while self.slot_waiters:
                        nxt = self.slot_waiters.popleft()
                        if not nxt.done():
                            nxt.set_result(None)
                            break
                raise
        self.require_open()
        packet_id = self.next_packet_id()
        fut: asyncio.Future[int] = self.loop.create_future()
        self.pubacks[packet_id] = fut
        return packet_id, fut


class Mqtt5Client:
    """MQTT 5 client; see the module docstring. One connection at a time; `connect()` again
    after the previous connection ended starts a new generation on the same object."""

    def __init__(
        self,
        *,
        host: str,
        port: int,
        client_id: str,
        username: str | None = None,
        password: str | None = None,
        clean_start: bool = False,
        session_expiry_s: int = 3600,
        keepalive_s: int = 30,
        receive_maximum: int = 65535,
        will: Will | None = None,
        on_batch: Callable[[list[InboundMessage]], None],
        topic_alias_maximum: int = 0,
        tls: ssl.SSLContext | None = None,
        server_hostname: str | None = None,
    ) -> None:
        """tls: connect over TLS with this context (CA, client certificate); None: plain TCP.
        server_hostname: the name the broker's certificate must carry (default: host)."""
        if not 1 <= receive_maximum <= 0xFFFF:
            raise ValueError("receive_maximum must be in 1..65535")
        self._host, self._port = host, port
        self._tls = tls
        self._server_hostname = (server_hostname or host) if tls is not None else None
        self.address = f"{'mqtts://' if tls is not None else ''}{host}:{port}"
        self._client_id = client_id
        self._username, self._password = username, password
        self._clean_start = clean_start
        self._session_expiry_s = session_expiry_s
        self._keepalive_s = keepalive_s
        self._receive_maximum = receive_maximum
        self._will = will
        self._on_batch = on_batch
        self._topic_alias_maximum = topic_alias_maximum
        self._conn: _Connection | None = None
        self._generation = 0
        self._connack: ConnAck | None = None

    @property
    def connected(self) -> bool:
        return self._conn is not None and self._conn.connected

    @property
    def pings_answered(self) -> int:
        """PINGRESPs the broker sent on the current connection: the keepalive at work."""
        return self._conn.pings_answered if self._conn is not None else 0

    @property
    def generation(self) -> int:
        """Generation of the current (or last) connection; 0 before the first connect()."""
        return self._generation

    @property
    def client_id(self) -> str:
        """The client id in use (the broker-assigned one if we connected with an empty id)."""
        assigned = self._connack.properties.get(codec.ASSIGNED_CLIENT_ID) if self._connack else None
        return assigned if isinstance(assigned, str) else self._client_id

    @property
    def tls_version(self) -> str | None:
        """The TLS version of the current connection ("TLSv1.3"); None for plain TCP."""
        conn = self._conn
        if conn is None or conn.transport is None:
            return None
        ssl_object = conn.transport.get_extra_info("ssl_object")
        return ssl_object.version() if isinstance(ssl_object, ssl.SSLObject | ssl.SSLSocket) else None

    @property
    def connack(self) -> ConnAck | None:
        """The last successful CONNACK (server receive maximum, topic alias maximum, ...)."""
        return self._connack

    async def connect(self, timeout: float = 10.0) -> bool:
        """Open the connection; returns CONNACK's session-present flag."""
        if self._conn is not None and not self._conn.closing:
            raise MqttError(f"already connected or connecting to {self.address}")
        self._generation = next(_generations)
        conn = self._conn = _Connection(self, self._generation)
        props: codec.Properties = {}
        if self._session_expiry_s:
            props[codec.SESSION_EXPIRY] = self._session_expiry_s
        # Always explicit: Mosquitto 2.0 applies its own max_inflight_messages (default 20)
        # to a client that leaves out Receive Maximum, instead of the 65535 MQTT 5 specifies.
        props[codec.RECEIVE_MAXIMUM] = self._receive_maximum
        if self._topic_alias_maximum:
            props[codec.TOPIC_ALIAS_MAXIMUM] = self._topic_alias_maximum
        packet = codec.encode_connect(
            client_id=self._client_id,
            keepalive_s=self._keepalive_s,
            clean_start=self._clean_start,
            username=self._username,
            password=self._password,
            will=self._will,
            properties=props,
        )
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(timeout):
                # Over TLS the protocol is the same: the SSL transport hands data_received the
                # decrypted stream in chunks, so a chunk's PUBLISHes still form one batch.
                await loop.create_connection(
                    lambda: conn, self._host, self._port,
                    ssl=self._tls, server_hostname=self._server_hostname,
                )
                conn.send(packet)
                connack = await conn.connack
        except TimeoutError:
            conn.abort(MqttConnectError(f"timed out connecting to {self.address}"))
            raise MqttConnectError(f"timed out after {timeout:g}s connecting to {self.address}") from None
        except OSError as exc:
            error = MqttConnectError(f"cannot connect to {self.address}: {exc}")
            conn.connack.cancel()  # never awaited: keep asyncio from reporting its exception
            conn.abort(error)
            raise error from exc
        except MqttConnectionLost as exc:
            message = f"{self.address} ended the connection during CONNECT: {exc}"
            raise MqttConnectError(message, exc.reason_code) from exc
        except BaseException:
            conn.connack.cancel()
            conn.abort(MqttConnectError(f"connecting to {self.address} was cancelled"))
            raise
        if connack.reason_code >= 0x80:
            refused = MqttConnectError(
                f"{self.address} refused the connection: {codec.reason_name(connack.reason_code)}",
                connack.reason_code,
            )
            conn.set_cause(refused)
            conn.close()
            raise refused
        self._connack = connack
        return connack.session_present

    def _live(self) -> _Connection:
        conn = self._conn
        if conn is None or not conn.connected:
            raise MqttConnectionLost(f"not connected to {self.address}")
        return conn

    async def subscribe(self, filters: Sequence[tuple[str, int]], timeout: float = 10.0) -> list[int]:
        """Subscribe (QoS 0 or 1 only); returns SUBACK's reason codes, one per filter."""
        for topic_filter, qos in filters:
            if qos not in (0, 1):
                raise ValueError(f"subscribe at QoS 0 or 1, not {qos} ({topic_filter!r})")
        conn = self._live()
        packet_id = conn.next_packet_id()
        packet = codec.encode_subscribe(packet_id, filters)
        fut: asyncio.Future[list[int]] = conn.loop.create_future()
        conn.subacks[packet_id] = fut
        conn.send(packet)
        try:
            async with asyncio.timeout(timeout):
                codes = await fut
        except TimeoutError:
            conn.subacks.pop(packet_id, None)
            raise MqttTimeoutError(f"no SUBACK from {self.address} within {timeout:g}s") from None
        if any(code >= 0x80 for code in codes):
            shown = ", ".join(
                f"{f!r}: {codec.reason_name(c)}" for (f, _), c in zip(filters, codes, strict=False)
            )
            raise MqttSubscribeError(f"{self.address} refused subscriptions: {shown}", codes)
        return codes

    def ack(self, messages: Iterable[InboundMessage]) -> None:
        """PUBACK the QoS 1 messages that arrived on the current connection and are not acked
        yet, in one write. Others are skipped: QoS 0, older generations, already acked."""
        conn = self._conn
        if conn is None or not conn.connected:
            return
        inflight = conn.decoder.inflight  # this connection's unacked QoS 1 messages, by packet id
        ids = []
        for msg in messages:
            packet_id = msg.packet_id
            if inflight.get(packet_id) is msg:  # identity: right generation, not acked yet
                del inflight[packet_id]
                ids.append(packet_id)
        if ids:
            conn.send(codec.encode_pubacks(ids))

    async def publish(
        self, topic: str, payload: bytes, qos: int = 1, retain: bool = False, timeout: float = 10.0
    ) -> int:
        """QoS 1: send, wait for PUBACK, return its reason code (>= 0x80 is a refusal, e.g.
        0x87 not authorized). QoS 0: return 0 once written. Waits while the broker's receive
        maximum of QoS 1 messages are in flight. MqttConnectionLost if the connection ends.
        `timeout` bounds the write and the broker's answer; the wait for an in-flight slot is
        bounded by it on its own (MqttTimeoutError either way, saying which)."""
        if qos not in (0, 1):
            raise ValueError(f"publish at QoS 0 or 1, not {qos}")
        conn = self._live()
        if qos == 0:
            try:
                async with asyncio.timeout(timeout):
                    packet = codec.encode_publish(topic, payload, 0, retain)
                    self._check_size(conn, packet)
                    conn.send(packet)
                    await conn.drain()
                    return 0
            except TimeoutError:
                raise MqttTimeoutError(f"{self.address} took no data for {timeout:g}s") from None
        # Our own queue first, timed apart from the broker's answer: publishes queued behind
        # others under a small receive maximum (HiveMQ 10) would otherwise spend their timeout
        # waiting here and fail as "no PUBACK" without ever having been written.
        try:
            async with asyncio.timeout(timeout):
                packet_id, fut = await conn.reserve_publish()
        except TimeoutError:
            raise MqttTimeoutError(
                f"no free in-flight slot at {self.address} within {timeout:g}s "
                f"(receive maximum {conn.server_receive_maximum}, all awaiting their PUBACK)"
            ) from None
        try:
            packet = codec.encode_publish(topic, payload, 1, retain, packet_id)
            self._check_size(conn, packet)
        except BaseException:
            conn.pubacks.pop(packet_id, None)
            raise
        try:
            async with asyncio.timeout(timeout):
                conn.send(packet)
                await conn.drain()
                return await fut
        except TimeoutError:
            raise MqttTimeoutError(f"no PUBACK from {self.address} within {timeout:g}s") from None

    @staticmethod
    def _check_size(conn: _Connection, packet: bytes) -> None:
        limit = conn.server_maximum_packet_size
        if limit and len(packet) > limit:
            raise MqttError(f"PUBLISH of {len(packet)} bytes exceeds the broker's {limit}")

    def pause_reading(self) -> None:
        conn = self._conn
        if conn is not None and conn.transport is not None and not conn.closing:
            conn.reading_paused = True
            conn.transport.pause_reading()

    def resume_reading(self) -> None:
        conn = self._conn
        if conn is not None and conn.transport is not None and not conn.closing:
            conn.reading_paused = False
            if conn.ping_sent_at:  # a PINGRESP may be waiting in the socket buffer
                conn.ping_sent_at = conn.loop.time()
            conn.transport.resume_reading()

    async def disconnect(self) -> None:
        """Clean DISCONNECT (reason 0: the broker discards the will), then half-close and wait
        for the broker to close its side: everything sent before (PUBACKs of the last batch)
        has then been processed by the broker. Aborts after a grace period."""
        conn = self._conn
        if conn is None:
            return
        transport = conn.transport
        if not conn.closing and transport is not None:
            conn.set_cause(None)
            conn.send(codec.encode_disconnect(0))
            conn.connected = False
            conn.closing = True
            transport.resume_reading()  # the broker's EOF must be seen even if we paused
            if transport.can_write_eof():
                transport.write_eof()
            else:
                transport.close()
        try:
            async with asyncio.timeout(_DISCONNECT_GRACE_S):
                await asyncio.shield(conn.closed)
        except TimeoutError:
            conn.abort(None)
            await asyncio.shield(conn.closed)

    def abort(self) -> None:
        """Drop the TCP connection without DISCONNECT (the broker publishes the will)."""
        conn = self._conn
        if conn is not None and not conn.closed.done():
            conn.abort(MqttConnectionLost(f"connection to {self.address} aborted by the client"))

    async def wait_closed(self) -> BaseException | None:
        """Wait until the current connection ends; its cause, None after disconnect()."""
        conn = self._conn
        if conn is None:
            return None
        return await asyncio.shield(conn.closed)
