"""The durable telemetry sink: a NATS JetStream stream (telemetry_sink = "jetstream").

Publishing: each record of a batch goes to `<prefix>.<VIN>` with a message id of the car's
VIN, envelope sequence, sample index and a digest of the record (`Nats-Msg-Id`), all
pipelined, and `publish` returns only when JetStream acknowledged every one (stored). Until
then the pipeline does not acknowledge the cars' messages to the broker (egress/sink.py). A
batch the stream does not confirm (server down, stream missing, timeout) is sent again after a
backoff, for as long as it takes: the stream's duplicate window drops what an earlier attempt
stored already, so a retry adds nothing twice. Meanwhile readiness says "telemetry_sink" is
down and gateway_telemetry_sink_failures_total counts the attempts; the client reconnects by
itself.

Reading (`records`): every SubscribeTelemetry stream on any gateway reads the whole fleet from
the stream through an ephemeral pull consumer that starts after the client's cursor (the stream
sequence), so a backend that was away resumes where it stopped: at least once, in order per car
(a car's records are stored in the order its gateway published them).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence

import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy, PubAck, StorageType, StreamConfig

from gateway._gen.telematics.v1 import telemetry_pb2
from gateway.backoff import Backoff
from gateway.egress.record import OutRecord
from gateway.metrics import Metrics
from gateway.redact import redact_url

log = logging.getLogger(__name__)

# Waits between attempts to store a batch while the stream fails: as for the store's commits.
SINK_BACKOFF = Backoff(initial_s=0.1, max_s=2.0)
ACK_TIMEOUT_S = 5.0  # one attempt's wait for JetStream's acknowledgements
START_TIMEOUT_S = 10.0  # the first connection and the stream check, at start
# The stream drops a message whose id it stored within this window: a retried batch, or the
# broker's redelivery of messages a gateway stored but could not acknowledge before it died.
DUPLICATE_WINDOW_S = 120.0
FETCH_RECORDS = 1_000  # records per SubscribeTelemetry message (as the live fan-out)
FETCH_WAIT_S = 1.0  # a reader's longest wait for new records (and for noticing the shutdown)
READER_IDLE_S = 30.0  # the server deletes a reader's consumer this long after it went away


class SinkUnavailable(Exception):
    """The stream cannot be read now (SubscribeTelemetry answers UNAVAILABLE)."""


class CursorPruned(Exception):
    """The records right after the reader's cursor are no longer in the stream (its retention
    removed them): SubscribeTelemetry answers OUT_OF_RANGE, as the Watch streams do, rather
    than continue silently after a gap."""

    def __init__(self, after: int, first: int) -> None:
        super().__init__(f"records after {after} were pruned; the oldest kept is {first}")
        self.after, self.first = after, first


class JetStreamSink:
    def __init__(
        self,
        *,
        url: str,
        stream: str,
        subject_prefix: str,
        metrics: Metrics,
        backoff: Backoff = SINK_BACKOFF,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        ack_timeout_s: float = ACK_TIMEOUT_S,
        start_timeout_s: float = START_TIMEOUT_S,
    ) -> None:
        """url: nats://[user:password@]host:port (shown only redacted). stream, subject_prefix:
        the stream's name and its subjects <subject_prefix>.<VIN>."""
        self._url = url
        self.display = redact_url(url)
        self.stream = stream
        self._prefix = subject_prefix
        self._m = metrics
        self._backoff = backoff
        self._sleep = sleep
        self._ack_timeout_s = ack_timeout_s
        self._start_timeout_s = start_timeout_s
        self._nc: NatsClient | None = None
        self._js: JetStreamContext | None = None
        self._failing = False  # the last attempt to store a batch failed
        self._closing = asyncio.Event()
        self.readers = 0  # open SubscribeTelemetry streams
        metrics.telemetry_sink_up.set(0)

    # -- lifecycle --
    async def start(self) -> None:
        """Connect and make sure the stream exists; raises SinkUnavailable (the gateway does not
        start, the message names the server without its password)."""
        try:
            # Bounded as a whole: with unlimited reconnects nats-py retries the first connect
            # forever too, and a gateway pointed at a wrong or dead server would hang at start
            # without a word instead of exiting with code 2.
            self._nc = await asyncio.wait_for(nats.connect(
                servers=[self._url],
                connect_timeout=2,
                allow_reconnect=True,
                max_reconnect_attempts=-1,  # an outage of any length ends in recovery
                reconnect_time_wait=1,
                error_cb=self._on_error,
                disconnected_cb=self._on_disconnected,
                reconnected_cb=self._on_reconnected,
            ), self._start_timeout_s)
            # One context for the sink's life: each new context's first publish_async opens a
            # reply subscription (and a task) of its own that is never removed.
            self._js = self._nc.jetstream(timeout=self._ack_timeout_s)
            await self._ensure_stream()
        except (OSError, TimeoutError, nats.errors.Error, nats.js.errors.Error) as exc:
            await self.close()
            raise SinkUnavailable(
                f"cannot use the JetStream stream {self.stream} at {self.display}: {type(exc).__name__}"
            ) from None
        self._m.telemetry_sink_up.set(1)

    async def close(self) -> None:
        self._closing.set()
        if self._nc is not None and not self._nc.is_closed:
            with contextlib.suppress(OSError, nats.errors.Error):  # going away anyway
                await self._nc.close()

    @property
    def ready(self) -> bool:
        """For /readyz: connected, and the last batch (if any failed) was stored since."""
        return self._nc is not None and self._nc.is_connected and not self._failing

    async def _ensure_stream(self) -> None:
        assert self._nc is not None
        js = self._nc.jetstream()
        try:
            await js.stream_info(self.stream)  # kept as the operator configured it (retention)
        except nats.js.errors.NotFoundError:
            await js.add_stream(StreamConfig(
                name=self.stream, subjects=[f"{self._prefix}.>"], storage=StorageType.FILE,
                duplicate_window=DUPLICATE_WINDOW_S,
            ))
            log.info("created the JetStream stream %s (subjects %s.>) at %s",
                     self.stream, self._prefix, self.display)

    async def _on_error(self, exc: Exception) -> None:
        log.debug("NATS connection: %s", type(exc).__name__)  # the class only: no URL, no secret

    async def _on_disconnected(self) -> None:
        self._m.telemetry_sink_up.set(0)
        log.warning("JetStream sink: disconnected from %s, reconnecting", self.display)

    async def _on_reconnected(self) -> None:
        self._failing = False
        self._m.telemetry_sink_up.set(1)
        log.warning("JetStream sink: reconnected to %s", self.display)

    # -- the sink (egress/sink.py) --
    async def publish(self, records: Sequence[OutRecord]) -> int:
        delays = self._backoff.delays()
        while True:
            reason = await self._store(records)
            if reason is None:
                if self._failing:
                    self._failing = False
                    self._m.telemetry_sink_up.set(1)
                    log.warning("JetStream sink: storing records again")
                return 1
            self._m.telemetry_sink_failures.labels(reason).inc()
            self._m.telemetry_sink_up.set(0)
            delay = next(delays)
            if not self._failing:
                self._failing = True
                log.warning("JetStream sink: stream %s did not store a batch (%s); retrying every"
                            " %.1f s or more, not acknowledged to the broker", self.stream, reason, delay)
            await self._sleep(delay)

    async def _store(self, records: Sequence[OutRecord]) -> str | None:
        """One attempt at the whole batch; None when JetStream stored every record, else why not."""
        nc, js = self._nc, self._js
        if nc is None or nc.is_closed or js is None:
            return "disconnected"
        pending: list[asyncio.Future[PubAck]] = []
        try:
            index = 0
            for i, rec in enumerate(records):
                # A car's envelope gives several records (one per sample), consecutive here.
                same = i > 0 and records[i - 1].vin == rec.vin and records[i - 1].sequence == rec.sequence
                index = index + 1 if same else 0
                data = rec.data  # the record's wire bytes, as the rules stage built them
                # The same record built again from a redelivered message has the same bytes; a
                # head unit reset (sequence_epoch, not in the record) reusing a sequence number
                # within the window gives other bytes (sent_at, samples), so it is not dropped.
                digest = hashlib.blake2b(data, digest_size=12).hexdigest()
                msg_id = f"{rec.vin}:{rec.sequence}:{index}:{digest}"
                future = await js.publish_async(
                    f"{self._prefix}.{rec.vin}", data,
                    wait_stall=self._ack_timeout_s, headers={"Nats-Msg-Id": msg_id},
                )
                pending.append(future)
            await asyncio.wait_for(asyncio.gather(*pending), self._ack_timeout_s)
            return None
        except (TimeoutError, nats.js.errors.TooManyStalledMsgsError):
            return "timeout"
        except nats.js.errors.NoStreamResponseError:
            await self._try_ensure_stream()
            return "no_stream"
        except (nats.errors.ConnectionClosedError, nats.errors.ConnectionReconnectingError,
                nats.errors.OutboundBufferLimitError, OSError):
            return "disconnected"
        except (nats.errors.Error, nats.js.errors.Error):
            return "error"
        finally:
            for future in pending:
                future.cancel()  # a timed-out attempt's late acknowledgements are not awaited

    async def _try_ensure_stream(self) -> None:
        # The server answered, but no stream takes the subjects (deleted, or a server that lost
        # its storage): create it again, then the retry stores the batch.
        try:
            await self._ensure_stream()
        except (OSError, TimeoutError, nats.errors.Error, nats.js.errors.Error) as exc:
            log.debug("JetStream sink: creating the stream failed: %s", type(exc).__name__)

    # -- reading (SubscribeTelemetry) --
    async def records(
        self, after_cursor: int, services: frozenset[str]
    ) -> AsyncGenerator[telemetry_pb2.TelemetryRecords, None]:
        """The stream's records after `after_cursor` (0: from the oldest kept), each with its
        cursor, in batches; follows new records until the gateway stops. Raises SinkUnavailable
        when the stream cannot be read (the client resumes from its last cursor)."""
        nc = self._nc
        if nc is None or not nc.is_connected:
            raise SinkUnavailable("the telemetry stream is not reachable")
        js = nc.jetstream()
        config = ConsumerConfig(
            ack_policy=AckPolicy.NONE,  # a reader's position is the client's cursor, not ours
            inactive_threshold=READER_IDLE_S,
            deliver_policy=DeliverPolicy.BY_START_SEQUENCE if after_cursor else DeliverPolicy.ALL,
            opt_start_seq=after_cursor + 1 if after_cursor else None,
        )
        try:
            sub = await js.pull_subscribe(f"{self._prefix}.>", stream=self.stream, config=config)
        except (TimeoutError, nats.errors.Error, nats.js.errors.Error) as exc:
            raise SinkUnavailable(f"cannot read the telemetry stream: {type(exc).__name__}") from None
        self.readers += 1
        expect = after_cursor + 1 if after_cursor else 0  # the first record's sequence, if kept
        try:
            while not self._closing.is_set():
                try:
                    msgs = await sub.fetch(FETCH_RECORDS, timeout=FETCH_WAIT_S)
                except TimeoutError:
                    continue  # nothing new (or reconnecting): ask again
                except (nats.errors.Error, nats.js.errors.Error) as exc:
                    if self._closing.is_set():
                        return  # the gateway stops: the stream ends (the client resumes elsewhere)
                    failed = f"reading the telemetry stream failed: {type(exc).__name__}"
                    raise SinkUnavailable(failed) from None
                out = telemetry_pb2.TelemetryRecords()
                for msg in msgs:
                    # The consumer reads every subject of the stream, whose sequence has no
                    # holes but at its front: a first record past the one asked for means
                    # the ones between were pruned (checked on the delivery, so no race with
                    # the retention).
                    seq = msg.metadata.sequence.stream
                    if expect and seq > expect:
                        raise CursorPruned(after_cursor, seq)
                    expect = 0
                    rec = telemetry_pb2.TelemetryRecord.FromString(msg.data)
                    if services and rec.service not in services:
                        continue
                    rec.cursor = seq
                    out.records.append(rec)
                if out.records:
                    yield out
        finally:
            self.readers -= 1
            # On failure the server drops the idle consumer itself (READER_IDLE_S).
            with contextlib.suppress(nats.errors.Error, nats.js.errors.Error):
                await sub.unsubscribe()
