"""Keeps one MQTT 5 connection alive: connect, subscribe, and after a loss reconnect with
exponential backoff and subscribe again.

Every (re)connection uses a fresh client from `make_client`, so it gets a new generation:
messages delivered before a reconnect can still be passed to `ack()`, which skips them (the
broker redelivers them on the new connection, where they are acknowledged normally).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable, Iterable, Sequence

from gateway.ingress.mqtt5 import (
    InboundMessage,
    Mqtt5Client,
    MqttConnectionLost,
    MqttError,
    MqttSubscribeError,
)
from gateway.ingress.mqtt5_codec import ConnAck

__all__ = ["MqttSession"]

log = logging.getLogger(__name__)


class MqttSession:
    """Keeps one Mqtt5Client connected: connect, subscribe, on loss reconnect with exponential
    backoff (base 0.2s, max 10s, jitter), resubscribe, count reconnects via callback.

    Usage: `await session.start()` (fails fast if the broker is unreachable), then run
    `session.run()` in a task (suggested name "mqtt-session.supervise") and `await
    session.stop()` at shutdown.
    """

    def __init__(
        self,
        *,
        make_client: Callable[[], Mqtt5Client],
        subscriptions: Sequence[tuple[str, int]],
        on_connected: Callable[[bool], None] | None = None,
        on_session: Callable[[bool], None] | None = None,
        on_disconnected: Callable[[BaseException | None], None] | None = None,
        on_reconnect: Callable[[], None] | None = None,
        check_connack: Callable[[ConnAck, str], None] | None = None,
        backoff_base_s: float = 0.2,
        backoff_max_s: float = 10.0,
    ) -> None:
        self._make_client = make_client
        self._subscriptions = list(subscriptions)
        self._on_connected = on_connected
        # Called with CONNACK's session-present flag before anything that arrived on the new
        # connection is processed (on_connected comes only after the SUBACK, and the broker
        # starts delivering a persistent session's backlog right after the CONNACK).
        self._on_session = on_session
        self._on_disconnected = on_disconnected
        self._on_reconnect = on_reconnect
        # Raises (an MqttError) when the broker's CONNACK lacks what we rely on: the connection
        # is then closed, and start() fails or the reconnect loop tries again later.
        self._check_connack = check_connack
        self._backoff_base_s = backoff_base_s
        self._backoff_max_s = backoff_max_s
        self._timeout = 10.0
        self._client: Mqtt5Client | None = None
        self._connecting: Mqtt5Client | None = None
        self._paused = False
        self._stopping = False
        self._stop_event = asyncio.Event()
        self._running = False
        self._run_done = asyncio.Event()

    @property
    def client(self) -> Mqtt5Client | None:
        """The current client (connected or not); None before start()."""
        return self._client

    @property
    def connected(self) -> bool:
        return self._client is not None and self._client.connected

    async def start(self, timeout: float = 10.0) -> None:
        """First connect and subscribe. MqttConnectError if the broker is unreachable or
        refuses; MqttSubscribeError if a subscription is refused. No retries here."""
        if self._client is not None:
            raise MqttError("MqttSession.start() called twice")
        self._timeout = timeout
        await self._connect_once()

    async def run(self) -> None:
        """Supervise until stop(): wait for the connection to end, then reconnect."""
        if self._client is None:
            raise MqttError("MqttSession.run() before start()")
        if self._running:
            raise MqttError("MqttSession.run() is already running")
        self._running = True
        self._run_done.clear()
        try:
            while not self._stopping and (client := self._client) is not None:
                cause = await client.wait_closed()
                if self._stopping:
                    break
                log.warning("MQTT connection to %s lost: %s", client.address, cause)
                self._notify(self._on_disconnected, cause)
                if await self._reconnect():
                    self._notify(self._on_reconnect)
        finally:
            self._running = False
            self._run_done.set()

    async def stop(self) -> None:
        """Disconnect cleanly; no reconnect afterwards. Waits for run() to return."""
        if self._stopping:
            if self._running:
                await self._run_done.wait()
            return
        self._stopping = True
        self._stop_event.set()
        if self._connecting is not None:
            self._connecting.abort()
        client = self._client
        if client is not None:
            was_connected = client.connected
            await client.disconnect()
            if was_connected:
                self._notify(self._on_disconnected, None)
        if self._running:
            await self._run_done.wait()

    # -- delegation ------------------------------------------------------------------------

    def ack(self, messages: Iterable[InboundMessage]) -> None:
        """PUBACK on the current connection; messages from an earlier one are skipped."""
        if self._client is not None:
            self._client.ack(messages)

    async def publish(
        self, topic: str, payload: bytes, qos: int = 1, retain: bool = False, timeout: float = 10.0
    ) -> int:
        client = self._client
        if client is None or not client.connected:
            raise MqttConnectionLost("MQTT session is not connected")
        return await client.publish(topic, payload, qos, retain, timeout)

    def pause_reading(self) -> None:
        """Stop reading from the broker; sticks across reconnects until resume_reading()."""
        self._paused = True
        if self._client is not None:
            self._client.pause_reading()

    def resume_reading(self) -> None:
        self._paused = False
        if self._client is not None:
            self._client.resume_reading()

    # -- internals -------------------------------------------------------------------------

    async def _connect_once(self) -> None:
        client = self._make_client()
        self._connecting = client
        try:
            session_present = await client.connect(self._timeout)
            if self._check_connack is not None and client.connack is not None:
                try:
                    self._check_connack(client.connack, client.address)
                except BaseException:
                    await client.disconnect()
                    raise
            self._notify(self._on_session, session_present)
            try:
                if self._subscriptions:
                    await client.subscribe(self._subscriptions, self._timeout)
            except MqttSubscribeError:
                await client.disconnect()
                raise
            except BaseException:
                client.abort()
                raise
        finally:
            self._connecting = None
        self._client = client
        if self._paused:
            client.pause_reading()
        self._notify(self._on_connected, session_present)

    async def _reconnect(self) -> bool:
        """Retry with backoff until connected (True) or stop() (False)."""
        attempt = 0
        while not self._stopping:
            delay = min(self._backoff_max_s, self._backoff_base_s * 2**attempt)
            delay *= random.uniform(0.5, 1.0)  # jitter: 15,000 gateways' clients do not sync
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._stop_event.wait()
            if self._stopping:
                return False
            attempt += 1
            try:
                await self._connect_once()
            except (MqttError, OSError) as exc:
                log.warning("MQTT reconnect attempt %d failed: %s", attempt, exc)
                continue
            if self._stopping:  # stop() came while the new connection was being set up
                await self._client_disconnect()
                return False
            log.info("MQTT reconnected after %d attempt(s)", attempt)
            return True
        return False

    async def _client_disconnect(self) -> None:
        if self._client is not None:
            await self._client.disconnect()

    @staticmethod
    def _notify(callback: Callable[..., None] | None, *args: object) -> None:
        if callback is None:
            return
        try:
            callback(*args)
        except Exception:
            log.exception("MQTT session callback %r failed", callback)
