"""One MQTT session per ingest slot this gateway holds, driven by its leases (slots.py).

Stands where a single MqttSession stands otherwise (gateway/app.py): the pipeline acknowledges,
pauses and resumes through it, downlinks are published through it. A message is acknowledged
on the session it arrived on (by its connection generation): packet ids mean nothing elsewhere.

The lease loop renews every third of the lease, each round bounded to half a period, and wakes
as well at the first local drop time, so a slot whose lease could not be renewed is dropped
(connection closed, supervision stopped) before the database lets another gateway claim it.
The loop runs on through the gateway's drain at shutdown (the leases must outlive the last
acknowledgement); stop() ends it, disconnects every slot cleanly and releases the leases. stop()
bounds itself (each disconnect, the release), so the gateway never cuts it short: a lease left
behind would keep the slot from the other gateways until it expired.

A downlink goes out through the first connected slot. A gateway holding none (a standby, or
between a handover and its next claim) opens a publish-only connection of its own on first
need (`make_publisher`: a clean, non-persistent session under its own client id, subscribed to
nothing), so a grant or a remote command asked of a standby still reaches the car.

run() is what the gateway watches (Gateway.wait): it raises SlotSupervisorError when a slot's
session supervisor ends on its own, rather than leaving a slot leased that nobody reads.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Sequence

from gateway.config import Config
from gateway.ingress.mqtt5 import (
    InboundMessage,
    Mqtt5Client,
    MqttConnectionLost,
    MqttError,
)
from gateway.ingress.mqtt5_codec import ConnAck
from gateway.ingress.mqtt_session import MqttSession
from gateway.ingress.slots import MonotonicClock, Round, SlotKeeper, holder_name, slot_names
from gateway.metrics import Metrics
from gateway.store.backends import pool_settings
from gateway.store.pg import PG_ERRORS
from gateway.store.slot_leases_postgres import PostgresLeaseTable

__all__ = ["SlotIngress", "SlotStartError", "SlotSupervisorError", "build_slot_ingress"]

log = logging.getLogger(__name__)

# A slot given up: the clean DISCONNECT may take this long before the connection is dropped.
_DROP_GRACE_S = 1.0
# The supervisor name of the publish-only connection (never a slot's client id: those end in -N).
_PUBLISHER = "publisher"


class SlotStartError(Exception):
    """The lease table could not be reached or set up at start."""


class SlotSupervisorError(Exception):
    """A slot's session supervisor ended on its own (a bug): run() raises it, so the gateway
    ends with it (Gateway.wait) instead of holding a lease on a slot nobody reads."""


class SlotIngress:
    def __init__(
        self,
        *,
        keeper: SlotKeeper,
        make_client: Callable[[str], Mqtt5Client],
        subscriptions: Sequence[tuple[str, int]],
        metrics: Metrics,
        on_session: Callable[[bool], None] | None = None,
        open_table: Callable[[], Awaitable[None]] | None = None,
        close_table: Callable[[], Awaitable[None]] | None = None,
        check_connack: Callable[[ConnAck, str], None] | None = None,
        make_publisher: Callable[[], Mqtt5Client] | None = None,
    ) -> None:
        """make_client(slot): a client connecting as client id `slot` (persistent session).
        on_session, check_connack: MqttSession's, for every slot. open_table, close_table: the
        lease table's connection, opened in start() and closed in stop(). make_publisher: the
        publish-only client used while no slot is connected (None: publishing then fails)."""
        self._keeper = keeper
        self._make_client = make_client
        self._subscriptions = list(subscriptions)
        self._m = metrics
        self._on_session = on_session
        self._open_table = open_table
        self._close_table = close_table
        self._check_connack = check_connack
        self.sessions: dict[str, MqttSession] = {}
        self._supervisors: dict[str, asyncio.Task[None]] = {}
        self._paused = False
        self._stopping = False
        self._wake = asyncio.Event()
        self._loop_task: asyncio.Task[None] | None = None
        self._make_publisher = make_publisher
        self._publisher: MqttSession | None = None
        self._publisher_lock = asyncio.Lock()
        self._failed = asyncio.Event()
        self._failure: SlotSupervisorError | None = None

    # -- the interface of MqttSession that the gateway uses --------------------------------

    @property
    def holder(self) -> str:
        return self._keeper.holder

    @property
    def held(self) -> frozenset[str]:
        return self._keeper.held

    @property
    def connected(self) -> bool:
        """Every slot held has its session up (a standby holding none is not connected)."""
        return bool(self.sessions) and all(s.connected for s in self.sessions.values())

    @property
    def client(self) -> Mqtt5Client | None:
        """The first slot's client (diagnostics); None when holding none."""
        for slot in sorted(self.sessions, key=self._keeper.slots.index):
            return self.sessions[slot].client
        return None

    async def start(self) -> None:
        """Join the table, take the first share of slots and connect them. SlotStartError when
        the table is unreachable; MqttConnectError when the broker refuses a slot."""
        try:
            if self._open_table is not None:
                await self._open_table()
            await self._keeper.join()
            first = await asyncio.wait_for(self._keeper.tick(), self._keeper.period_s)
        except (*PG_ERRORS, TimeoutError) as exc:
            if self._close_table is not None:
                await self._close_table()
            raise SlotStartError(f"ingest slot leases: {exc}") from exc
        log.info(
            "ingest slots: holder %s, %d slot(s) %s, lease %gs", self.holder, len(self._keeper.slots),
            ", ".join(self._keeper.slots), self._keeper.lease_s,
        )
        for slot in first.claimed:
            session = self._new_session(slot)
            try:
                await session.start()
            except BaseException:
                await self.stop()  # what started disconnects, the leases are released
                raise
            self._supervise(slot, session.run())
            self._claimed(slot)
        if not first.claimed:
            log.warning("ingest slots: none free, standing by (holder %s)", self.holder)
        self._publish_state()

    async def run(self) -> None:
        """The lease loop until stop(). Cancelling run() does not stop it (see the docstring).
        Raises SlotSupervisorError when a slot's supervisor ended on its own."""
        if self._loop_task is None:
            self._loop_task = asyncio.create_task(self._lease_loop(), name="gateway.slot-leases")
        failed = asyncio.create_task(self._failed.wait(), name="gateway.slot-failure")
        try:
            # asyncio.wait, unlike awaiting the task, leaves the lease loop running on cancel.
            await asyncio.wait((self._loop_task, failed), return_when=asyncio.FIRST_COMPLETED)
        finally:
            failed.cancel()
        if self._failure is not None:
            raise self._failure
        self._loop_task.result()  # the lease loop's own error, if it had one

    async def stop(self) -> None:
        """Disconnect every slot cleanly, then release the leases and leave the table."""
        if self._stopping:
            return
        self._stopping = True
        self._wake.set()
        if self._loop_task is not None:
            self._loop_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop_task
        # Side by side: N slots take one drop grace, not N.
        await asyncio.gather(
            *(self._disconnect(slot) for slot in list(self.sessions)), self._stop_publisher()
        )
        try:
            await asyncio.wait_for(self._keeper.leave(), self._keeper.period_s)
        except (*PG_ERRORS, TimeoutError) as exc:
            log.warning("ingest slots: could not release the leases (they expire): %s", exc)
        self._publish_state()
        if self._close_table is not None:
            await self._close_table()

    def ack(self, messages: Iterable[InboundMessage]) -> None:
        """PUBACK each message on the session it arrived on; others (older connections, slots
        given up) are skipped: the broker delivers those again to the slot's next holder."""
        batch = list(messages)
        by_generation = {
            s.client.generation: s for s in self.sessions.values() if s.client is not None
        }
        if len(by_generation) == 1:
            next(iter(by_generation.values())).ack(batch)
            return
        groups: dict[int, list[InboundMessage]] = {}
        for msg in batch:
            groups.setdefault(msg.generation, []).append(msg)
        for generation, group in groups.items():
            session = by_generation.get(generation)
            if session is not None:
                session.ack(group)

    async def publish(
        self, topic: str, payload: bytes, qos: int = 1, retain: bool = False, timeout: float = 10.0
    ) -> int:
        """Through the first connected slot (a downlink goes to the car whichever session sends
        it); with none, through the publish-only connection."""
        for slot in sorted(self.sessions, key=self._keeper.slots.index):
            session = self.sessions[slot]
            if session.connected:
                return await session.publish(topic, payload, qos, retain, timeout)
        publisher = await self._publisher_session()
        if publisher is None:
            raise MqttConnectionLost("no ingest slot connected (standing by, or reconnecting)")
        return await publisher.publish(topic, payload, qos, retain, timeout)

    async def _publisher_session(self) -> MqttSession | None:
        """The publish-only connection, connected on first need (MqttConnectError when the
        broker cannot be reached: the caller's publish fails as it would on a slot)."""
        if self._make_publisher is None or self._stopping:
            return None
        async with self._publisher_lock:
            if self._publisher is None:
                session = MqttSession(
                    make_client=self._make_publisher, subscriptions=[],
                    on_reconnect=self._m.mqtt_reconnects.inc,
                )
                await session.start()
                if self._stopping:  # stop() came meanwhile: it did not see this one
                    await session.stop()
                    return None
                self._publisher = session
                self._supervise(_PUBLISHER, session.run())
                log.info("ingest slots: none connected, downlinks go out through a publish-only connection")
            return self._publisher

    async def _stop_publisher(self) -> None:
        async with self._publisher_lock:
            session, self._publisher = self._publisher, None
        task = self._supervisors.pop(_PUBLISHER, None)
        await _end(session, task)

    def pause_reading(self) -> None:
        self._paused = True
        for session in self.sessions.values():
            session.pause_reading()

    def resume_reading(self) -> None:
        self._paused = False
        for session in self.sessions.values():
            session.resume_reading()

    # -- the lease loop ----------------------------------------------------------------------

    async def _lease_loop(self) -> None:
        loop = asyncio.get_running_loop()
        keeper = self._keeper
        next_round = loop.time() + keeper.period_s
        while not self._stopping:
            wait = next_round - loop.time()
            until_drop = keeper.seconds_to_deadline()
            if until_drop is not None:
                wait = min(wait, until_drop)
            if wait > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), wait)
            if self._stopping:
                return
            if loop.time() >= next_round:
                next_round = loop.time() + keeper.period_s
                await self._round()
            for slot in keeper.overdue():
                self._m.ingest_slot_changes.labels("lost").inc()
                log.error(
                    "ingest slot %s: lease not renewed in time (database unreachable?): disconnecting"
                    " before another gateway may take it", slot,
                )
                await self._disconnect(slot)
            self._publish_state()

    async def _round(self) -> None:
        try:
            result = await asyncio.wait_for(self._keeper.tick(), self._keeper.period_s / 2)
        except (*PG_ERRORS, TimeoutError) as exc:
            self._m.ingest_lease_errors.inc()
            log.warning("ingest slots: lease renewal failed: %s", str(exc) or type(exc).__name__)
            return
        await self._apply(result)

    async def _apply(self, result: Round) -> None:
        for slot in result.lost:
            self._m.ingest_slot_changes.labels("lost").inc()
            log.error("ingest slot %s: lease lost (taken or expired): disconnecting", slot)
            await self._disconnect(slot)
        for slot in result.surplus:
            # Disconnect first, release after: the next holder connects only once we are gone.
            log.info("ingest slot %s: beyond this gateway's share, handing it back", slot)
            await self._disconnect(slot)
            try:
                await self._keeper.release([slot])
            except PG_ERRORS as exc:
                log.warning("ingest slot %s: release failed (the lease expires): %s", slot, exc)
            self._m.ingest_slot_changes.labels("released").inc()
        for slot in result.claimed:
            self._claimed(slot)
            session = self._new_session(slot)
            self._supervise(slot, self._connect_and_supervise(slot, session))

    async def _connect_and_supervise(self, slot: str, session: MqttSession) -> None:
        """Connect as a newly claimed slot (retrying while the broker is away), then keep it."""
        delay = 0.2
        while True:
            try:
                await session.start()
                break
            except (MqttError, OSError) as exc:
                log.warning("ingest slot %s: connect failed, retrying in %.1fs: %s", slot, delay, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)
        self._publish_state()
        await session.run()

    async def _disconnect(self, slot: str) -> None:
        """End the slot's session now: a clean DISCONNECT (the broker keeps the session and its
        queue for the next holder), or dropping the connection when that takes too long."""
        session = self.sessions.pop(slot, None)
        task = self._supervisors.pop(slot, None)
        await _end(session, task)
        self._publish_state()

    # -- helpers -----------------------------------------------------------------------------

    def _supervise(self, slot: str, supervisor: Coroutine[None, None, None]) -> None:
        task = asyncio.create_task(supervisor, name=f"gateway.slot.{slot}")
        self._supervisors[slot] = task
        task.add_done_callback(lambda done: self._supervisor_ended(slot, done))

    def _supervisor_ended(self, slot: str, task: asyncio.Task[None]) -> None:
        """A supervisor ends by _disconnect (it is no longer registered then) or by stop();
        any other end is a failure: the slot stays leased to us with nobody reading it."""
        if self._stopping or self._supervisors.get(slot) is not task:
            return
        error = None if task.cancelled() else task.exception()
        cause = f"{type(error).__name__}: {error}" if error is not None else "returned"
        log.error("ingest slot %s: session supervisor ended (%s)", slot, cause)
        if self._failure is None:
            self._failure = SlotSupervisorError(f"ingest slot {slot}: session supervisor ended ({cause})")
            self._failure.__cause__ = error
            self._failed.set()

    def _new_session(self, slot: str) -> MqttSession:
        session = MqttSession(
            make_client=lambda: self._make_client(slot),
            subscriptions=self._subscriptions,
            on_connected=lambda _present: self._publish_state(),
            on_session=self._on_session,
            on_disconnected=lambda _exc: self._publish_state(),
            on_reconnect=self._m.mqtt_reconnects.inc,
            check_connack=self._check_connack,
        )
        if self._paused:
            session.pause_reading()
        self.sessions[slot] = session
        return session

    def _claimed(self, slot: str) -> None:
        self._m.ingest_slot_changes.labels("claimed").inc()
        log.info("ingest slot %s: claimed by %s, connecting", slot, self.holder)

    def _publish_state(self) -> None:
        self._m.ingest_slots_held.set(len(self._keeper.held))
        self._m.mqtt_connected.set(1 if self.connected else 0)



def build_slot_ingress(
    config: Config,
    make_client: Callable[[str], Mqtt5Client],
    subscriptions: Sequence[tuple[str, int]],
    metrics: Metrics,
    on_session: Callable[[bool], None] | None = None,
    check_connack: Callable[[ConnAck, str], None] | None = None,
    make_publisher: Callable[[], Mqtt5Client] | None = None,
) -> SlotIngress:
    """The slots of `config` (`<mqtt_client_id>-1 .. -mqtt_slots`), leased in its store_url."""
    table = PostgresLeaseTable(url=config.store_url, settings=pool_settings(config, metrics, "leases"))
    keeper = SlotKeeper(
        table,
        holder=holder_name(),
        slots=slot_names(config.mqtt_client_id, config.mqtt_slots),
        lease_s=config.mqtt_slot_lease_s,
        clock=MonotonicClock(),
    )
    return SlotIngress(
        keeper=keeper, make_client=make_client, subscriptions=subscriptions, metrics=metrics,
        on_session=on_session, open_table=table.open, close_table=table.close,
        check_connack=check_connack, make_publisher=make_publisher,
    )


async def _end(session: MqttSession | None, task: asyncio.Task[None] | None) -> None:
    """A clean DISCONNECT within _DROP_GRACE_S, else the connection dropped; then its
    supervisor stopped."""
    if session is not None:
        try:
            await asyncio.wait_for(session.stop(), _DROP_GRACE_S)
        except (TimeoutError, MqttError, OSError):
            if session.client is not None:
                session.client.abort()
    if task is not None and not task.done():
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, MqttError, OSError):
            await task
