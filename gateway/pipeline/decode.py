"""The decode stage: the gate a batch's messages pass before they reach a session (topic,
quarantine, the per-car message limit, the payload's validation, then the per-car Hello limit),
each decided once per message; what is rejected is counted by reason."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Sequence

from gateway import topics
from gateway.decode import Decoded, DecodedWill, Rejected, decode_payload
from gateway.pipeline.batches import Gated, LogBudget, Message
from gateway.pipeline.topic_cache import TopicCache
from gateway.session.ratelimit import CarLimits

log = logging.getLogger("gateway.pipeline")


class DecodeStage:
    def __init__(
        self,
        *,
        max_payload_bytes: int,
        limits: CarLimits | None,
        epoch_of: Callable[[str], int | None],
        log_budget: LogBudget,
    ) -> None:
        """
        max_payload_bytes: larger payloads are rejected (reason "oversize").
        limits: per-car token buckets (messages, Hellos); None: unlimited.
        epoch_of: the sequence epoch of a car's session (None: no session), for the Hello limit.
        log_budget: shared with the other stages that log a rejection.
        """
        self._max_payload = max_payload_bytes
        self._limits = limits
        self._epoch_of = epoch_of
        self._log_budget = log_budget
        self._topics = TopicCache()

    @property
    def quarantined(self) -> bool:
        """A car is quarantined now (a quarantine to run out: worth a tick)."""
        quarantine = self._limits.quarantine if self._limits is not None else None
        return quarantine is not None and len(quarantine) > 0

    def due(self, now: float) -> bool:
        """A quarantine has run out."""
        quarantine = self._limits.quarantine if self._limits is not None else None
        return quarantine is not None and quarantine.due(now)

    def gate(self, batch: Sequence[Message], now: float, rejected: Counter[str]) -> Gated:
        """The messages that pass the topic, quarantine, the per-car message limit and the
        payload's validation; the others counted in `rejected`."""
        limits = self._limits
        quarantine = limits.quarantine if limits is not None else None
        quarantined: list[str] = []
        released = quarantine.release_due(now) if quarantine is not None else []
        blocked = quarantine.blocked if quarantine is not None else frozenset()
        if limits is not None:
            limits.evict(now)
            if not limits.active(now):
                limits = None  # catching up on the broker's backlog after a reconnect (ratelimit.py)
        items: list[Decoded | DecodedWill] = []
        hellos = False
        known = self._topics.parsed.get  # the hit inlined: every message looks its topic up
        parse = self._topics.decode
        messages = limits.messages if limits is not None else None
        max_payload = self._max_payload
        for msg in batch:
            # The topic first (parsed once for both uses), then the per-car limit before the
            # payload is decoded: a flood of bad payloads is dropped as cheaply as one of good
            # ones, and never reaches the session. Keyed by the topic's VIN (the broker's ACL
            # confines a car to its own topics). A dropped QoS 1 message is acknowledged with
            # the batch like any rejected one (README "MQTT topics", Limits).
            topic = known(msg.topic) or parse(msg.topic)
            if isinstance(topic, Rejected):
                d: Decoded | DecodedWill | Rejected = topic
            elif blocked and topic[0] in blocked:
                # Quarantined (session/quarantine.py): what the broker had queued before it was
                # told, or everything where the broker cannot be told (an external one).
                rejected["quarantined"] += 1
                continue
            elif messages is not None and not messages.take(topic[0], now):
                rejected["rate_limited"] += 1
                if quarantine is not None and quarantine.refused(topic[0], now):
                    quarantined.append(topic[0])
                    blocked = quarantine.blocked
                if self._log_budget.allow():
                    log.debug("rejected uplink on %s: rate_limited: over %g messages/s (burst %d)",
                              msg.topic, messages.rate, messages.burst,
                              extra={"event": "uplink_rejected", "reason": "rate_limited"})
                continue
            else:
                d = decode_payload(topic[0], topic[1], msg.payload, max_payload, now=now)
            if isinstance(d, Rejected):
                rejected[d.reason] += 1
                if self._log_budget.allow():
                    log.debug("rejected uplink on %s: %s: %s", msg.topic, d.reason, d.detail,
                              extra={"event": "uplink_rejected", "reason": d.reason})
                continue
            if not hellos and type(d) is Decoded and d.body == "hello":
                hellos = True
            items.append(d)
        return Gated(items, quarantined, released, limits, hellos)

    def gate_hellos(self, gated: Gated, now: float, rejected: Counter[str]) -> list[Decoded | DecodedWill]:
        """The per-car Hello limit, after the refresh: it needs the car's sequence epoch."""
        limits = gated.limits
        if limits is None or not gated.hellos:
            return gated.items
        epochs: dict[str, int] = {}  # a Hello that passed opens its epoch for the next ones
        out: list[Decoded | DecodedWill] | None = None  # a copy only once one is dropped
        for i, d in enumerate(gated.items):
            if isinstance(d, Decoded) and d.body == "hello":
                env = d.envelope
                epoch = epochs.get(env.vin)
                if epoch is None:
                    epoch = self._epoch_of(env.vin)
                # A reconnect storm of one car: each connection's Hello costs an online event, a
                # store write and the entitlement engine's boot handling. A Hello that opens a
                # new sequence epoch (a new or reset head unit) always passes: dropped, every
                # later envelope of that epoch would count as other_epoch and the car could
                # never be seen again (it still took a message token).
                reinstalled = epoch is not None and epoch != env.sequence_epoch
                if not reinstalled and not limits.hellos.take(env.vin, now):
                    rejected["hello_rate_limited"] += 1
                    if self._log_budget.allow():
                        log.debug("rejected uplink on %s: hello_rate_limited: over %g Hellos/s (burst %d)",
                                  topics.uplink(env.vin), limits.hellos.rate, limits.hellos.burst,
                                  extra={"event": "uplink_rejected", "reason": "hello_rate_limited"})
                    if out is None:
                        out = gated.items[:i]
                    continue
                epochs[env.vin] = env.sequence_epoch
            if out is not None:
                out.append(d)
        return gated.items if out is None else out
