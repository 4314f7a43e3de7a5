"""The engine's publishing to cars: each downlink counted by kind and outcome, and FoD commands
the broker refused kept to be sent again on a later tick (R17 commands are durable in the
ledger before they are published, so a lost publish must not lose the command)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence

from gateway import topics
from gateway._gen.telematics.v1 import downlink_pb2
from gateway.entitlements.ledger.base import CommandRecord
from gateway.metrics import Metrics

log = logging.getLogger("gateway.entitlements.engine")


class Downlinks:
    def __init__(self, *, publish: Callable[[str, bytes], Awaitable[None]], metrics: Metrics) -> None:
        """publish: (topic, payload) QoS 1 to the car; may raise while the broker is down.
        metrics: counts every downlink by kind and outcome."""
        self._publish = publish
        self._m = metrics
        self._unsent: dict[str, downlink_pb2.Downlink] = {}  # command id -> FodCommand to retry

    async def send(self, vin: str, downlink: downlink_pb2.Downlink, kind: str) -> bool:
        """Publish one downlink; False (logged, counted) when the broker is down or refused."""
        exc = await self._counted(vin, downlink, kind)
        if exc is not None:
            log.warning("publishing %s to %s failed: %s", kind, vin, exc)
        return exc is None

    async def send_all(
        self, downlinks: Sequence[tuple[str, downlink_pb2.Downlink]], kind: str, *, window: int
    ) -> list[bool]:
        """Publish (vin, downlink) pairs with at most `window` awaiting their PUBACK at once;
        True/False per pair, in order. `window` workers take the next pair as one finishes:
        a restart storm's 15,000 sets neither start 15,000 tasks in one loop turn nor queue
        all at once behind the broker's receive maximum (where the ones at the back would
        wait out their publish timeout). No two pairs may be for one VIN (the order of a
        car's downlinks is not kept across workers). One warning for all failures (log
        budget); each failure is still counted."""
        results: list[Exception | None] = [None] * len(downlinks)
        pending = iter(range(len(downlinks)))  # shared: each index goes to one worker

        async def worker() -> None:
            for i in pending:
                vin, downlink = downlinks[i]
                results[i] = await self._counted(vin, downlink, kind)

        await asyncio.gather(*(worker() for _ in range(min(window, len(downlinks)))))
        failed = [(vin, exc) for (vin, _), exc in zip(downlinks, results, strict=True) if exc is not None]
        if failed:
            vin, exc = failed[0]
            shown = (kind, len(failed), len(downlinks), vin, exc)
            log.warning("publishing %s failed for %d of %d cars (first %s: %s)", *shown)
        return [exc is None for exc in results]

    async def _counted(self, vin: str, downlink: downlink_pb2.Downlink, kind: str) -> Exception | None:
        """Publish one downlink, count its outcome; the error when the broker is down or refused."""
        try:
            await self._publish(topics.downlink(vin), downlink.SerializeToString())
        except Exception as exc:  # broker down or refused: a later tick tries again
            self._m.entitlement_downlinks.labels(kind, "error").inc()
            return exc
        self._m.entitlement_downlinks.labels(kind, "ok").inc()
        return None

    async def send_commands(self, downlinks: Iterable[tuple[CommandRecord, downlink_pb2.Downlink]]) -> None:
        """Publish FoD commands; remember the ones that did not go out."""
        for command, downlink in downlinks:
            if await self.send(command.vin, downlink, "fod_command"):
                self._unsent.pop(command.command_id, None)
            else:
                self._unsent[command.command_id] = downlink

    def unsent(
        self, latest: Mapping[str, CommandRecord]
    ) -> list[tuple[CommandRecord, downlink_pb2.Downlink]]:
        """The unsent commands still worth sending: each still the latest, unanswered command of
        its entitlement (`latest`: entitlement id -> its latest command)."""
        out = []
        for command_id, downlink in list(self._unsent.items()):
            command = latest.get(downlink.fod_command.entitlement_id)
            if command is None or command.command_id != command_id or command.result_at is not None:
                del self._unsent[command_id]  # superseded or answered
                continue
            out.append((command, downlink))
        return out
