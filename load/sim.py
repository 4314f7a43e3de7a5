"""A realistic day of a fleet on an accelerated clock, for functional end-to-end runs
(50-500 cars; one aiomqtt client per car, independent of the gateway's MQTT code).

Each car, seeded: boots (Hello boot=true), drives (telemetry batches with locations), may
cross a border (visited country/MCC/roaming change), toggles privacy mode, may lose its link
(unclean disconnect: the will fires) and reconnect, parks (power off, lock), plugs in and
charges (a ChargingSession record with a unique session_id), and sleeps (Goodbye, DISCONNECT).
While connected it keeps its announced heartbeat (Hello.heartbeat_interval_s, wall seconds).
It answers downlinks on v1/vehicles/{vin}/down: EntitlementSet -> EntitlementAck, FodCommand
-> FodResult, RemoteCommand -> CommandResult.

With a gateway's gRPC address (always when the sim starts its own gateway), the day drives the
entitlement lifecycles too: SetVehicleOwner for every car; Grant of a SERVICE (remote-services)
and an FOD_UNLIMITED (sport-chrono) to a seeded share of the fleet, before or during the day.
Every car ends its day with an evening at home: a boot (Hello boot=true) while online, a drive
(for some with privacy on), a head-unit restart while online, then parked: power off, locked,
unplugged, privacy off, online, until its services are acked and its FoDs unlocked (an FoD
picked at ``--fod-failure-rate`` answers its first unlock with a failure, its retry with
success). Then some cars say goodbye, some stay online, and one (inserted SIM, roaming off)
ends abroad. ``--check`` compares the outcome through the gateway's gRPC APIs (load/sim_checks.py).

    python -m load.sim --cars 30 --check          # own broker + gateway; metrics and outcome checks
    python -m load.sim --port 18830 --cars 100 --hours 24 --speed 1440   # a running broker
    python -m load.sim --port 18830 --grpc 127.0.0.1:50051 --cars 30 --check   # running gateway
    python -m load.sim --port 18883 --tls --pki-dir data/pki --cars 3 --hours 1 --speed 360   # over TLS

With ``--tls`` every car connects to the broker's TLS listener with its own client certificate
(CN = its VIN), issued on first use from the development CA in ``--pki-dir`` and cached in
``--cert-dir`` (load/sim_tls.py); without it, to the plain loopback listener by client id.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import math
import os
import random
import socket
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiomqtt
import grpc

from gateway import topics
from gateway._gen.telematics.v1 import common_pb2, downlink_pb2, uplink_pb2
from gateway._gen.telematics.v1 import entitlements_pb2 as ent
from gateway._gen.telematics.v1 import entitlements_pb2_grpc as ent_grpc
from gateway.api.client import aio_channel, token_from
from gateway.security.pki import PkiError
from load import sim_checks
from load.fleet import COUNTRIES, INSERTED_SIM, NEIGHBOURS, Car, generate_fleet
from load.payloads import header
from load.sim_checks import FOD_PRODUCT, SERVICE_PRODUCT, CarRecord, CheckResult, GrantRecord, Sent
from load.sim_tls import DEFAULT_CACHE, CarCertificates

CURRENCY = {"US": "USD", "CA": "CAD", "GB": "GBP", "CH": "CHF", "AU": "AUD", "CN": "CNY", "JP": "JPY",
            "PL": "PLN", "SE": "SEK"}
SERVICES = ("remote-services", "car-finder", "navigation-plus")
# Liveness (README "MQTT topics"): the gateway times out a car silent for 3 announced heartbeat
# intervals, on its own (wall) clock. A sim car parked online for hours of simulated time (and
# at slow --speed for real minutes) must say "still here" like a real one: its Hello announces
# this interval and it sends a Heartbeat when it sent nothing else for that long (wall time).
HEARTBEAT_S = 30


class SimClock:
    """Simulated time running ``speed`` times faster than the wall clock; the day is anchored
    so that it ends at the real start time, and from then on simulated time is the real time:
    every timestamp sent lies in the past. (Without the cap, a car still busy after the day -
    settling its lifecycles on a loaded machine - stamped its messages over an hour ahead of the
    gateway's clock, which refused them as bad_timestamp.)"""

    def __init__(self, speed: float, hours: float) -> None:
        self.speed = speed
        self.t0 = time.monotonic()
        self.start = time.time() - hours * 3600

    def now(self) -> float:
        return min(self.start + (time.monotonic() - self.t0) * self.speed, time.time())

    async def sleep(self, sim_seconds: float) -> None:
        await asyncio.sleep(max(0.0, sim_seconds / self.speed))


@dataclass
class Stats:
    sent: Counter[str] = field(default_factory=Counter)
    downlinks: Counter[str] = field(default_factory=Counter)
    events: Counter[str] = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)

    def error(self, msg: str) -> None:
        self.events["errors"] += 1
        if len(self.errors) < 20:
            self.errors.append(msg)


@dataclass(frozen=True, slots=True)
class Plan:
    """What a car does besides its random day (seeded by the simulator)."""

    grant_at: float = 0.0  # share of the day (before the evening) when the owner buys; 0: at dawn
    evening_privacy: bool = False  # drives with privacy on in the evening (R22 check)
    stay_online: bool = False  # ends the day online instead of saying goodbye
    abroad: str = ""  # ends the day in this country, roaming switched off (R21 Explain check)
    settle_timeout_s: float = 150.0  # wall seconds parked for the lifecycles to finish


class SimCar:
    def __init__(self, car: Car, port: int, clock: SimClock, stats: Stats, rng: random.Random,
                 fod_failure_rate: float = 0.0, record: CarRecord | None = None, plan: Plan = Plan(),
                 api: ent_grpc.EntitlementServiceStub | None = None,
                 tls: CarCertificates | None = None) -> None:
        """fod_failure_rate: for FoD commands of entitlements the sim did not grant (a gateway
        run by someone else), the chance of answering with a failure. tls: connect to ``port``
        as a TLS listener with the car's own certificate from these."""
        self.car, self.port, self.clock, self.stats, self.rng = car, port, clock, stats, rng
        self.fod_failure_rate = fod_failure_rate
        self.record = record or CarRecord(car.vin, car.model, car.model_year, owner="")
        self.plan, self.api = plan, api
        # One context per car for its whole day (its reconnects too): the certificate is
        # issued or read once, not per connection.
        self.tls_context = tls.context(car.vin) if tls is not None else None
        self.granted = False
        self.fod_answers: dict[str, bool] = {}  # command id -> success answered
        self.progress = asyncio.Event()  # a downlink was answered
        self.seq = 0
        self.visited = car.home_country
        self.privacy = common_pb2.Privacy(mode=common_pb2.PRIVACY_MODE_OFF)
        self.client: aiomqtt.Client | None = None
        self.reader: asyncio.Task[None] | None = None
        self.heart: asyncio.Task[None] | None = None
        self.last_sent = 0.0  # time.monotonic() of the last publish
        self.heartbeat_s: float = HEARTBEAT_S
        self.connection_id = 0
        self.lat, self.lon = COUNTRIES[car.home_country][2:]
        self.electric = car.model == "Taycan" or (car.model in ("Cayenne", "Panamera") and rng.random() < 0.4)
        self.sessions = 0

    # -- envelopes --
    def envelope(self) -> uplink_pb2.Envelope:
        self.seq += 1
        env = header(self.car, self.seq, visited=self.visited)
        env.privacy.CopyFrom(self.privacy)
        return env

    async def send(self, env: uplink_pb2.Envelope, qos: int = 1) -> None:
        if self.client is None:
            return
        kind = env.WhichOneof("body") or "?"
        try:
            self.last_sent = time.monotonic()
            await self.client.publish(topics.uplink(self.car.vin), env.SerializeToString(), qos=qos)
            self.stats.sent[kind] += 1
        except aiomqtt.MqttError as exc:
            self.stats.error(f"{self.car.vin} publish {kind}: {exc}")

    async def state(self, **fields: int) -> None:
        env = self.envelope()
        env.state_change.state.SetInParent()
        for name, value in fields.items():
            setattr(env.state_change.state, name, value)
        await self.send(env)

    # -- connection --
    async def connect(self, *, boot: bool, parked: bool) -> None:
        self.connection_id = self.rng.getrandbits(64)
        will = uplink_pb2.LastWill(vin=self.car.vin, connection_id=self.connection_id).SerializeToString()
        # Over TLS the broker takes the client id from the certificate (the VIN) whatever we ask.
        client = aiomqtt.Client("127.0.0.1", self.port, identifier=self.car.vin,
                                protocol=aiomqtt.ProtocolVersion.V5, keepalive=60,
                                will=aiomqtt.Will(topics.will(self.car.vin), will, qos=1),
                                tls_context=self.tls_context)
        for attempt in range(5):
            try:
                await client.__aenter__()
                break
            except aiomqtt.MqttError as exc:
                if attempt == 4:
                    self.stats.error(f"{self.car.vin} connect: {exc}")
                    return
                await asyncio.sleep(0.2 * (attempt + 1))
        self.client = client
        await client.subscribe(topics.downlink(self.car.vin), qos=1)
        self.reader = asyncio.create_task(self.read_downlinks(client))
        env = self.envelope()
        h = env.hello
        h.connection_id, h.boot = self.connection_id, boot
        h.model, h.model_year, h.home_country = self.car.model, self.car.model_year, self.car.home_country
        h.software_version = self.car.software_version
        h.state.power = common_pb2.POWER_STATE_OFF if parked else common_pb2.POWER_STATE_ON
        h.state.lock = common_pb2.LOCK_STATE_LOCKED if parked else common_pb2.LOCK_STATE_UNLOCKED
        h.state.charging_plug = common_pb2.CHARGING_PLUG_DISCONNECTED
        h.heartbeat_interval_s = math.ceil(self.heartbeat_s)
        await self.send(env)
        self.heart = asyncio.create_task(self.heartbeats(client))

    async def heartbeats(self, client: aiomqtt.Client) -> None:
        """While `client` is the car's connection: a Heartbeat whenever nothing was sent for
        half the announced interval (the envelope and its publish are one synchronous step, as
        in ``answer``, so the sequence order holds)."""
        while self.client is client:
            await asyncio.sleep(max(0.0, self.last_sent + self.heartbeat_s / 2 - time.monotonic()))
            if self.client is client and time.monotonic() - self.last_sent >= self.heartbeat_s / 2:
                env = self.envelope()
                env.heartbeat.SetInParent()
                await self.send(env, qos=0)

    def _stop_heartbeats(self) -> None:
        if self.heart is not None:
            self.heart.cancel()
            self.heart = None

    async def sleep_mode(self) -> None:
        """Orderly: Goodbye, then DISCONNECT (no will)."""
        env = self.envelope()
        env.goodbye.reason = "sleep"
        await self.send(env)
        await self._close(clean=True)

    async def lose_link(self) -> None:
        """The TCP connection ends without DISCONNECT: the broker publishes the will. The socket
        is shut down, not closed, so the MQTT client notices and cleans up on its own."""
        client, self.client = self.client, None
        self._stop_heartbeats()
        if client is not None:
            sock = client._client.socket()
            if isinstance(sock, socket.socket):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
        if self.reader is not None:
            with contextlib.suppress(asyncio.TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(self.reader, 5)
        self.stats.events["link_lost"] += 1

    async def _close(self, *, clean: bool) -> None:
        client, self.client = self.client, None
        self._stop_heartbeats()
        if self.reader is not None:
            self.reader.cancel()
        if client is not None and clean:
            with contextlib.suppress(aiomqtt.MqttError):
                await client.__aexit__(None, None, None)

    # -- downlinks --
    async def read_downlinks(self, client: aiomqtt.Client) -> None:
        with contextlib.suppress(aiomqtt.MqttError):
            async for message in client.messages:
                try:
                    down = downlink_pb2.Downlink.FromString(message.payload)
                except Exception as exc:
                    self.stats.error(f"{self.car.vin} bad downlink: {exc}")
                    continue
                await self.answer(down)

    async def answer(self, down: downlink_pb2.Downlink) -> None:
        body = down.WhichOneof("body") or "?"
        self.stats.downlinks[body] += 1
        env = self.envelope()
        if body == "entitlement_set":
            ids = [i.entitlement_id for i in down.entitlement_set.items]
            env.entitlement_ack.set_version = down.entitlement_set.version
            env.entitlement_ack.entitlement_ids.extend(ids)
            await self.send(env)
            self.record.acked.update(ids)
        elif body == "fod_command":
            cmd = down.fod_command
            ok = self.fod_answer(cmd)
            r = env.fod_result
            r.command_id, r.entitlement_id, r.action = cmd.command_id, cmd.entitlement_id, cmd.action
            r.success = ok
            if not ok:
                r.error = "installation failed: charging connection active"
            await self.send(env)
        elif body == "remote_command":
            env.command_result.command_id = down.remote_command.command_id
            env.command_result.success = True
            await self.send(env)
        self.progress.set()

    def fod_answer(self, cmd: downlink_pb2.FodCommand) -> bool:
        """A granted FoD picked to fail answers its first command with a failure and every
        later one with success; a repeated command (QoS 1 redelivery) gets the same answer.
        Commands for FoDs the sim did not grant fail at ``fod_failure_rate``."""
        known = self.fod_answers.get(cmd.command_id)
        if known is not None:
            return known
        eid = cmd.entitlement_id
        grant = next((g for g in self.record.grants if g.is_fod and g.entitlement_id == eid), None)
        if grant is None:  # the command overtook the Grant call's answer
            grant = next((g for g in self.record.grants if g.is_fod and not g.entitlement_id
                          and g.product_id == cmd.function_id), None)
        if grant is None:
            ok = self.rng.random() >= self.fod_failure_rate
        else:
            ok = not (grant.fails_first and not self.record.fod_failures[eid])
        self.fod_answers[cmd.command_id] = ok
        (self.record.fod_successes if ok else self.record.fod_failures)[eid] += 1
        self.stats.events["fod_success" if ok else "fod_failure"] += 1
        return ok

    # -- the day --
    async def drive(self, minutes: int, *, may_cross: bool = True) -> None:
        heading = self.rng.uniform(0, 2 * math.pi)
        crossing = may_cross and self.rng.random() < 0.15 and self.car.home_country in NEIGHBOURS
        for minute in range(minutes):
            if crossing and minute == minutes // 2:
                self.visited = self.rng.choice(NEIGHBOURS[self.car.home_country])
                self.stats.events["border_crossing"] += 1
                await self.state()  # header carries the new country, MCC and roaming flag
            if self.rng.random() < 0.004 and self.client is not None:
                await self.lose_link()
                await self.clock.sleep(self.rng.uniform(20, 300))  # a tunnel, a dead zone
                await self.connect(boot=False, parked=False)
            env = self.envelope()
            env.telemetry.service = self.rng.choice(SERVICES)
            speed = self.rng.uniform(30, 130)
            for k in range(6):  # one sample per 10 s
                self.lat += speed / 3600 * 10 / 111 * math.cos(heading)
                self.lon += speed / 3600 * 10 / 111 * math.sin(heading)
                s = env.telemetry.samples.add()
                s.sampled_at.FromNanoseconds(int((self.clock.now() + k * 10) * 1e9))
                s.location.latitude, s.location.longitude = round(self.lat, 6), round(self.lon, 6)
                s.location.heading_deg, s.location.speed_kmh = math.degrees(heading) % 360, speed
                s.signals.add(name="soc_pct", number=float(self.rng.randint(10, 100)))
            if self.client is not None:  # what the privacy check compares the records with
                self.record.telemetry[env.sequence] = Sent(
                    env.telemetry.service, self.privacy.mode, tuple(self.privacy.services), True)
            await self.send(env, qos=0)
            await self.clock.sleep(60)

    async def charge(self) -> None:
        await self.state(charging_plug=common_pb2.CHARGING_PLUG_CONNECTED)
        started = self.clock.now()
        hours = self.rng.uniform(0.3, 3.0)
        await self.clock.sleep(hours * 3600)
        await self.state(charging_plug=common_pb2.CHARGING_PLUG_DISCONNECTED)
        self.sessions += 1
        env = self.envelope()
        cs = env.charging_session
        cs.session_id = f"{self.car.vin}-{int(started)}-{self.sessions}"
        cs.started_at.FromNanoseconds(int(started * 1e9))
        cs.ended_at.FromNanoseconds(int(self.clock.now() * 1e9))
        cs.location.latitude, cs.location.longitude = round(self.lat, 6), round(self.lon, 6)
        cs.location_name = f"Charging park {self.visited}-{self.rng.randint(1, 400)}"
        cs.energy_kwh = round(hours * self.rng.choice((11.0, 22.0, 50.0)), 2)
        cs.currency = CURRENCY.get(self.visited, "EUR")
        cs.cost_minor = int(cs.energy_kwh * self.rng.uniform(35, 79))
        cs.power_class = self.rng.choice(("AC11", "AC22", "DC50", "DC150", "DC270"))
        await self.send(env)

    async def toggle_privacy(self) -> None:
        mode = self.rng.choice((common_pb2.PRIVACY_MODE_OFF, common_pb2.PRIVACY_MODE_ALL_SERVICES,
                                common_pb2.PRIVACY_MODE_PER_SERVICE))
        self.privacy = common_pb2.Privacy(mode=mode)
        if mode == common_pb2.PRIVACY_MODE_PER_SERVICE:
            self.privacy.services.append(self.rng.choice(SERVICES))
        self.stats.events["privacy_toggle"] += 1
        await self.state()

    async def rest(self, seconds: float, end: float) -> None:
        """Sleep simulated seconds, but not past the end of the day."""
        await self.clock.sleep(min(seconds, max(0.0, end - self.clock.now())))

    async def day(self, hours: float) -> None:
        start = self.clock.now()
        end = start + hours * 3600
        evening = end - min(2 * 3600, hours * 3600 * 0.25)  # the last part: the lifecycle evening
        grant_at = start + self.plan.grant_at * (evening - start)
        if self.api is not None:
            await sim_checks.set_owner(self.api, self.record)
        if grant_at <= start:
            await self.buy()
        await self.rest(self.rng.uniform(5, 9) * 3600 * min(1.0, hours / 24), evening)  # night: asleep
        while self.clock.now() < evening:
            if self.clock.now() >= grant_at:
                await self.buy()
            await self.connect(boot=True, parked=True)
            await self.state(power=common_pb2.POWER_STATE_ON, lock=common_pb2.LOCK_STATE_UNLOCKED)
            if self.rng.random() < 0.2:
                await self.toggle_privacy()
            await self.drive(self.rng.randint(10, 60))
            await self.state(power=common_pb2.POWER_STATE_OFF)
            await self.state(lock=common_pb2.LOCK_STATE_LOCKED)
            self.visited = self.visited if self.rng.random() < 0.5 else self.car.home_country
            if self.electric and self.rng.random() < 0.6:
                await self.charge()
            await self.rest(self.rng.uniform(0.2, 1.0) * 3600, evening)  # parked, online
            if self.client is not None:
                await self.sleep_mode()
            await self.rest(self.rng.uniform(1, 6) * 3600, evening)  # asleep
        if self.client is not None:
            await self.sleep_mode()
        await self.buy()
        await self.evening()

    async def buy(self) -> None:
        """The owner's orders (once): Grant of every planned product."""
        if self.granted or self.api is None:
            return
        self.granted = True
        for g in self.record.grants:
            try:
                await sim_checks.grant(self.api, self.record, g)
                self.stats.events["granted"] += 1
            except grpc.aio.AioRpcError as exc:
                self.stats.error(f"{self.car.vin} Grant {g.product_id}: {exc.code().name} {exc.details()}")

    async def restart(self) -> None:
        """The head unit restarts while the car is online: the link closes, the car comes back
        at once with Hello boot=true (R13: services appear after such a restart)."""
        await self._close(clean=True)
        await self.connect(boot=True, parked=False)
        self.stats.events["restart_online"] += 1

    async def evening(self) -> None:
        """Home, a boot while online, a drive, a restart, then parked for the FoD window (R17)
        until the lifecycles are done; then goodbye, or online (at home or abroad)."""
        self.visited = self.car.home_country
        await self.connect(boot=True, parked=True)
        await self.state(power=common_pb2.POWER_STATE_ON, lock=common_pb2.LOCK_STATE_UNLOCKED)
        if self.plan.evening_privacy:
            mode = self.rng.choice(
                (common_pb2.PRIVACY_MODE_ALL_SERVICES, common_pb2.PRIVACY_MODE_PER_SERVICE))
            self.privacy = common_pb2.Privacy(mode=mode)
            if mode == common_pb2.PRIVACY_MODE_PER_SERVICE:
                self.privacy.services.append(self.rng.choice(SERVICES))
            self.stats.events["privacy_toggle"] += 1
            await self.state()
        await self.drive(self.rng.randint(5, 20), may_cross=False)
        await self.restart()
        await self.drive(self.rng.randint(3, 10), may_cross=False)
        self.privacy = common_pb2.Privacy(mode=common_pb2.PRIVACY_MODE_OFF)
        await self.state(power=common_pb2.POWER_STATE_OFF, lock=common_pb2.LOCK_STATE_LOCKED,
                         charging_plug=common_pb2.CHARGING_PLUG_DISCONNECTED)
        await self.settle()
        if self.plan.abroad:
            self.visited = self.plan.abroad  # header: visited country, MCC, roaming flag
            await self.state()
            self.record.abroad_roaming_off = self.plan.abroad
        if self.plan.abroad or self.plan.stay_online:
            self.record.ended_online = self.client is not None
        else:
            await self.sleep_mode()
            self.record.ended_online = False

    async def settle(self) -> None:
        """Stay parked and online until every grant is acked or unlocked, or the timeout."""
        if self.api is None or not self.record.grants:
            return
        deadline = time.monotonic() + self.plan.settle_timeout_s
        while not self.record.settled() and time.monotonic() < deadline:
            self.progress.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.progress.wait(), 0.5)
        if not self.record.settled():
            self.stats.events["not_settled"] += 1


@dataclass(frozen=True, slots=True)
class SimOptions:
    cars: int = 100
    hours: float = 24.0  # simulated hours
    speed: float = 1440.0  # simulated seconds per real second
    seed: int = 1
    fod_failure_rate: float = 0.1  # share of FoDs whose first unlock fails (the retry succeeds)
    grant_share: float = 0.5  # share of cars given a service, and (independently) an FoD
    stay_online_share: float = 0.35
    fod_idle_s: float = 2.0  # GATEWAY_FOD_IDLE_S of the gateway the sim starts (R17, default 600)
    # GATEWAY_ENTITLEMENT_ACK_TIMEOUT_S (default 600): an FoD command published just as the car
    # went to sleep is lost (no persistent session) and sent again only after this long.
    ack_timeout_s: float = 20.0
    settle_timeout_s: float = 150.0  # R18 backoff after a failure is 60 s (wall) in the gateway
    check: bool = False


@dataclass(slots=True)
class SimRun:
    stats: Stats
    records: list[CarRecord]
    result: CheckResult | None = None  # with --check and a gRPC address


def plan_fleet(opts: SimOptions) -> tuple[list[Car], list[CarRecord], list[Plan]]:
    """The seeded fleet, the owners' orders and each car's evening. One car that can take an
    inserted SIM becomes the roaming check car: inserted SIM, roaming off, ends abroad."""
    fleet = generate_fleet(opts.cars, opts.seed)
    rng = random.Random(f"lifecycles:{opts.seed}")
    roamer = next((i for i, c in enumerate(fleet) if c.model != "Taycan" and c.home_country in NEIGHBOURS),
                  next((i for i, c in enumerate(fleet) if c.model != "Taycan"), -1))
    records: list[CarRecord] = []
    plans: list[Plan] = []
    for i, car in enumerate(fleet):
        abroad = ""
        if i == roamer:
            car = fleet[i] = dataclasses.replace(car, bearer=INSERTED_SIM, roaming_enabled=False)
            abroad = NEIGHBOURS.get(car.home_country, ("DE" if car.home_country != "DE" else "AT",))[0]
        rec = CarRecord(car.vin, car.model, car.model_year, owner=f"owner.{car.vin.lower()}@example.com",
                        bearer=car.bearer)
        if rng.random() < opts.grant_share or i == 0:
            rec.grants.append(GrantRecord(SERVICE_PRODUCT, ent.ENTITLEMENT_KIND_SERVICE,
                                          f"sim-{opts.seed}-{car.vin}-svc"))
        if rng.random() < opts.grant_share or i == min(1, len(fleet) - 1):
            rec.grants.append(GrantRecord(FOD_PRODUCT, ent.ENTITLEMENT_KIND_FOD_UNLIMITED,
                                          f"sim-{opts.seed}-{car.vin}-fod",
                                          fails_first=rng.random() < opts.fod_failure_rate))
        records.append(rec)
        plans.append(Plan(
            grant_at=0.0 if rng.random() < 0.5 else rng.random(),
            evening_privacy=rng.random() < 0.4,
            stay_online=rng.random() < opts.stay_online_share,
            abroad=abroad,
            settle_timeout_s=opts.settle_timeout_s,
        ))
    fods = [g for rec in records for g in rec.grants if g.is_fod]
    if opts.fod_failure_rate > 0 and fods and not any(g.fails_first for g in fods):
        fods[0].fails_first = True  # the failure path is driven in every run with a rate > 0
    return fleet, records, plans


async def simulate(port: int, opts: SimOptions, grpc_target: str = "", token: str = "",
                   tls: CarCertificates | None = None) -> SimRun:
    """The day of the fleet against the broker on ``port``; with ``grpc_target`` the entitlement
    lifecycles too, and with ``opts.check`` their outcome checked at the end. With ``tls``,
    ``port`` is the broker's TLS listener and each car presents its own certificate."""
    fleet, records, plans = plan_fleet(opts)
    clock = SimClock(opts.speed, opts.hours)
    stats = Stats()
    channel = aio_channel(grpc_target, token or None) if grpc_target else None
    api = ent_grpc.EntitlementServiceStub(channel) if channel is not None else None
    if api is None:
        for rec in records:
            rec.grants.clear()  # no gateway API: traffic only
    sims = [SimCar(c, port, clock, stats, random.Random(f"sim:{opts.seed}:{c.vin}"), opts.fod_failure_rate,
                   rec, plan, api, tls)
            for c, rec, plan in zip(fleet, records, plans, strict=True)]
    tap = sim_checks.TelemetryTap(grpc_target, token) if grpc_target and opts.check else None

    async def guarded(sim: SimCar) -> None:
        try:
            await sim.day(opts.hours)
        except Exception as exc:  # one car's failure is reported, the day goes on
            stats.error(f"{sim.car.vin}: {type(exc).__name__}: {exc}")
            sim.record.ended_online = None
            await sim._close(clean=False)

    run = SimRun(stats, records)
    try:
        if tap is not None:
            await tap.start()
        await asyncio.gather(*(guarded(s) for s in sims))
        stats.events["charging_sessions"] = sum(s.sessions for s in sims)
        if tap is not None:
            await tap.stop()
            run.result = await sim_checks.run_checks(grpc_target, records, tap.records, token=token)
            if tap.error:
                run.result.miss(f"SubscribeTelemetry ended: {tap.error}")
    finally:
        for sim in sims:  # the cars that stayed online go now, after the checks
            await sim._close(clean=True)
        if channel is not None:
            await channel.close()
    return run


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m load.sim", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--port", type=int, default=0,
                    help="broker port on 127.0.0.1 (with --tls its TLS listener, e.g. 18883); "
                         "0: start a broker and the gateway here")
    ap.add_argument("--tls", action="store_true",
                    help="cars connect over TLS, each with its own certificate (CN = VIN)")
    ap.add_argument("--pki-dir", type=Path, default=Path("data/pki"),
                    help="with --tls and --port: the development CA (ca.crt, ca.key) that issues "
                         "the cars' certificates (the running gateway's data_dir/pki)")
    ap.add_argument("--cert-dir", type=Path, default=DEFAULT_CACHE,
                    help="with --tls: where the cars' certificates are cached")
    ap.add_argument("--grpc", default="", help="with --port: the running gateway's gRPC host:port")
    ap.add_argument("--grpc-token-file", default="data/credentials/admin.token",
                    help="with --grpc: file holding a bearer token with the scopes the checks need")
    d = SimOptions()
    ap.add_argument("--cars", type=int, default=d.cars)
    ap.add_argument("--hours", type=float, default=d.hours, help="simulated hours")
    ap.add_argument("--speed", type=float, default=d.speed, help="simulated seconds per real second")
    ap.add_argument("--seed", type=int, default=d.seed)
    ap.add_argument("--fod-failure-rate", type=float, default=d.fod_failure_rate,
                    help="share of FoDs whose first unlock fails (the retry succeeds)")
    ap.add_argument("--grant-share", type=float, default=d.grant_share)
    ap.add_argument("--fod-idle-s", type=float, default=d.fod_idle_s,
                    help="GATEWAY_FOD_IDLE_S for the gateway started here")
    ap.add_argument("--ack-timeout-s", type=float, default=d.ack_timeout_s,
                    help="GATEWAY_ENTITLEMENT_ACK_TIMEOUT_S for the gateway started here")
    ap.add_argument("--settle-timeout", type=float, default=d.settle_timeout_s,
                    help="wall seconds a parked car waits for its lifecycles")
    ap.add_argument("--check", action="store_true",
                    help="check the lifecycles' outcome through the gateway's gRPC APIs")
    a = ap.parse_args(argv)
    if a.check and a.port and not a.grpc:
        ap.error("--check with --port needs --grpc")
    opts = SimOptions(cars=a.cars, hours=a.hours, speed=a.speed, seed=a.seed,
                      fod_failure_rate=a.fod_failure_rate, grant_share=a.grant_share,
                      fod_idle_s=a.fod_idle_s, ack_timeout_s=a.ack_timeout_s,
                      settle_timeout_s=a.settle_timeout, check=a.check)
    started = time.monotonic()
    if a.port:
        token = token_from(a.grpc_token_file) if a.grpc else ""
        try:
            tls = CarCertificates(a.pki_dir, a.cert_dir) if a.tls else None
        except PkiError as exc:
            ap.error(str(exc))
        run = asyncio.run(simulate(a.port, opts, a.grpc, token, tls))
        checks: dict[str, Any] = {}
    else:
        run, checks = with_gateway(opts, tls_cache=a.cert_dir if a.tls else None)
    stats = run.stats
    print(json.dumps({"cars": a.cars, "hours": a.hours, "wall_s": round(time.monotonic() - started, 1),
                      "sent": dict(stats.sent), "downlinks": dict(stats.downlinks),
                      "events": dict(stats.events), "errors": stats.errors, "gateway": checks,
                      "outcome": run.result.as_dict() if run.result is not None else None}, indent=1))
    failed = [k for k, v in checks.items() if isinstance(v, dict) and not v.get("ok", True)]
    if run.result is not None and not run.result.ok:
        failed.append("outcome")
        for m in run.result.mismatches:
            print(f"MISMATCH {m}", file=sys.stderr)
    for k in failed:
        print(f"FAILED {k}", file=sys.stderr)
    return 0 if not stats.errors and not failed else 1


@contextlib.contextmanager
def _environ(**values: str) -> Iterator[None]:
    """GATEWAY_* variables for the gateway subprocess started inside the block."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def with_gateway(opts: SimOptions, tls_cache: Path | None = None) -> tuple[SimRun, dict[str, Any]]:
    """Run the day against a fresh broker and gateway; compare what the gateway counted. With
    ``tls_cache`` the broker has a TLS listener and a CA of its own, and the cars use it."""
    from load.harness import BenchBroker, GatewayProcess, metric_sum

    with tempfile.TemporaryDirectory(prefix="sim-") as tmp, \
            BenchBroker(Path(tmp) / "broker", tls=tls_cache is not None) as broker:
        with _environ(GATEWAY_FOD_IDLE_S=str(opts.fod_idle_s),
                      GATEWAY_ENTITLEMENT_ACK_TIMEOUT_S=str(opts.ack_timeout_s)):
            gw = GatewayProcess(Path(tmp) / "gateway", broker)
        try:
            gw.wait_ready()
            tls = CarCertificates(broker.pki_dir, tls_cache) if tls_cache is not None else None
            port = broker.tls_port if tls is not None else broker.port
            run = asyncio.run(simulate(port, opts, gw.grpc_target, gw.token, tls))
            time.sleep(1.0)
            m = gw.metrics()
        finally:
            gw.stop()
            problems = gw.log_problems()
    stats = run.stats

    def same(kind: str, counted: float) -> dict[str, Any]:
        return {"sent": stats.sent[kind], "gateway": counted, "ok": counted == stats.sent[kind]}

    checks: dict[str, Any] = {
        kind: same(kind, metric_sum(m, f'gateway_messages_received_total{{kind="{kind}"}}'))
        for kind in ("hello", "state_change", "telemetry", "charging_session", "goodbye",
                     "entitlement_ack", "fod_result", "command_result", "heartbeat")
    }
    checks["charging_sessions_recorded"] = same(
        "charging_session", metric_sum(m, 'gateway_vehicle_events_total{kind="charging_session"}'))
    checks["vehicles_tracked"] = {"cars": opts.cars, "gateway": metric_sum(m, "gateway_vehicles_tracked"),
                                  "ok": metric_sum(m, "gateway_vehicles_tracked") == opts.cars}
    checks["online_at_end"] = metric_sum(m, "gateway_vehicles_online")
    checks["rejected"] = metric_sum(m, "gateway_messages_rejected_total")
    checks["wills"] = metric_sum(m, 'gateway_messages_received_total{kind="will"}')
    checks["billable_metric"] = metric_sum(m, "gateway_entitlement_billable_total")
    checks["log_problems"] = problems
    return run, checks


if __name__ == "__main__":
    sys.exit(main())
