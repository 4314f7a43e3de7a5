"""Wake-ups across gateways sharing one PostgreSQL database (store_url).

A gateway's Watch streams wait on its EventHub, which its own pipeline and ledger wake after
each commit. Another gateway's commits reach it here: every commit that writes outbox rows
sends NOTIFY with the highest cursor on the outbox's channel (gateway/store/pg_outbox.py
`append`), and this module LISTENs on one dedicated connection (a pool would hand the
connection to other work and lose the LISTEN) and passes each cursor to the hub of that
outbox. The streams then read by cursor from the store, as after a local commit: a
notification carries no data, only the reason to read.

A connection that is lost is reconnected (with backoff while the database is unreachable;
`gateway_store_notify_reconnects_total`). Notifications sent while no connection listened are
gone, but nothing is lost: after each LISTEN the newest cursor of each outbox is read and the
hub woken up to it, so a stream reads whatever was committed meanwhile. A connection that dies
silently (a network partition: no FIN) is found by a ping every `ping_s`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg

from gateway.metrics import Metrics
from gateway.redact import redact_url
from gateway.store import pg_outbox
from gateway.store.base import StoreError
from gateway.store.pg import CONNECT_TIMEOUT_S, PG_ERRORS
from gateway.store.pg_outbox import Outbox
from gateway.store.sqlite_thread import MAX_INTEGER

log = logging.getLogger(__name__)

APPLICATION_NAME = "gateway-listen"  # what pg_stat_activity shows for this connection
PING_S = 30.0
PING_TIMEOUT_S = 10.0
RETRY_MIN_S = 0.1
RETRY_MAX_S = 5.0

Connect = Callable[[str], Awaitable[asyncpg.Connection]]


async def connect(url: str) -> asyncpg.Connection:
    return await asyncpg.connect(
        url, timeout=CONNECT_TIMEOUT_S, server_settings={"application_name": APPLICATION_NAME}
    )


@dataclass(frozen=True, slots=True)
class Wake:
    outbox: Outbox
    notify: Callable[[int], None]  # EventHub.notify of the streams that read this outbox


class OutboxListener:
    def __init__(
        self, *, url: str, wakes: Sequence[Wake], metrics: Metrics, ping_s: float = PING_S
    ) -> None:
        """url: the store's postgresql:// URL. wakes: the hub to wake per outbox."""
        self._url = url
        self.display = redact_url(url)
        self._wakes = {w.outbox.channel: w for w in wakes}
        self._metrics = metrics
        self._ping_s = ping_s
        # How each connection is made. Tests wrap it to hold a reconnect back.
        self.connect: Connect = connect
        self._conn: asyncpg.Connection | None = None
        self._lost = asyncio.Event()
        self._warned = False

    @property
    def backend_pid(self) -> int | None:
        """The server process of the current LISTEN connection (None while there is none)."""
        return None if self._conn is None else self._conn.get_server_pid()

    async def start(self) -> None:
        """The first connection: StoreError when the database cannot be reached."""
        try:
            await self._listen()
        except PG_ERRORS as exc:
            raise StoreError(f"cannot listen for commits on postgresql {self.display}: {exc}") from exc

    async def run(self) -> None:
        """Keep a connection listening until cancelled."""
        while True:
            await self._watch()
            self._drop()
            log.warning("lost the LISTEN connection to postgresql %s; reconnecting", self.display)
            await self._reconnect()
            log.info("LISTEN connection to postgresql %s re-established", self.display)

    async def close(self) -> None:
        self._drop()

    async def _listen(self, *, again: bool = False) -> None:
        """again: a reconnect (counted in gateway_store_notify_reconnects_total)."""
        conn = await self.connect(self._url)
        try:
            lost = asyncio.Event()
            conn.add_termination_listener(lambda _conn: lost.set())
            for channel in self._wakes:
                await conn.add_listener(channel, self._on_notification)
            # Only now, with LISTEN in place: what committed before (also while no connection
            # listened) is covered by waking each hub up to the newest cursor.
            newest = [(w, await pg_outbox.last_cursor(conn, w.outbox)) for w in self._wakes.values()]
        except BaseException:
            conn.terminate()
            raise
        # The connection and its metrics are in place before any stream is woken (no await
        # from here on), so whoever a wake-up reaches sees the reconnect counted.
        self._conn, self._lost, self._warned = conn, lost, False
        self._metrics.store_notify_connected.set(1)
        if again:
            self._metrics.store_notify_reconnects.inc()
        for wake, cursor in newest:
            wake.notify(cursor)

    async def _reconnect(self) -> None:
        delay = RETRY_MIN_S
        while True:
            try:
                await self._listen(again=True)
                return
            except PG_ERRORS as exc:
                log.warning("cannot listen on postgresql %s (retry in %.1f s): %s", self.display, delay, exc)
            await asyncio.sleep(delay)
            delay = min(delay * 2, RETRY_MAX_S)

    async def _watch(self) -> None:
        """Return when the connection is gone: closed by the server, or not answering a ping."""
        conn = self._conn
        assert conn is not None
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._lost.wait(), self._ping_s)
                return
            try:
                await conn.fetchval("SELECT 1", timeout=PING_TIMEOUT_S)
            except (*PG_ERRORS, TimeoutError):
                return

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
        self._metrics.store_notify_connected.set(0)
        if conn is not None:
            conn.terminate()  # no goodbye to wait for on a dead connection

    def _on_notification(self, _conn: Any, _pid: int, channel: str, payload: object) -> None:
        wake = self._wakes.get(channel)
        if wake is None:  # only our channels are LISTENed
            return
        counter = self._metrics.store_notifications
        cursor = _cursor(payload)
        if cursor is not None:
            counter.labels(wake.outbox.table, "ok").inc()
            wake.notify(cursor)
            return
        # Not a cursor: someone else NOTIFYs on our channel. Counted; logged once per connection
        # (the payload is not echoed: it is not ours).
        counter.labels(wake.outbox.table, "bad_payload").inc()
        if not self._warned:
            self._warned = True
            log.warning("a notification on %s is not a cursor; ignored (counted from now on)", channel)


def _cursor(payload: object) -> int | None:
    """The cursor a notification carries; None when it is not one (a bigint, as stored)."""
    if isinstance(payload, str) and payload.isascii() and payload.isdigit() and len(payload) <= 19:
        value = int(payload)
        if value <= MAX_INTEGER:
            return value
    return None
