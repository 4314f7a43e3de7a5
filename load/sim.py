"""A realistic day of a fleet on an accelerated clock, for functional end-to-end runs
(50-500 cars; one aiomqtt client per car, independent of the gateway's MQTT code).

Each car, seeded: boots (Hello boot=true), drives (telemetry batches with locations), may
cross a border (visited country/MCC/roaming change), toggles privacy mode, may lose its link
(unclean disconnect: the will fires) and reconnect, parks (power off, lock), plugs in and
charges (a ChargingSession record with a unique session_id), and sleeps (Goodbye, DISCONNECT).
It answers downlinks on v1/vehicles/{vin}/down: EntitlementSet -> EntitlementAck, FodCommand
-> FodResult (failing at ``--fod-failure-rate``), RemoteCommand -> CommandResult.

    python -m load.sim --cars 100                  # own broker + gateway, checks its metrics
    python -m load.sim --port 18830 --cars 100 --hours 24 --speed 1440   # a running broker
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import random
import socket
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiomqtt

from gateway import topics
from gateway._gen.telematics.v1 import common_pb2, downlink_pb2, uplink_pb2
from load.fleet import COUNTRIES, NEIGHBOURS, Car, generate_fleet
from load.payloads import header

CURRENCY = {"US": "USD", "CA": "CAD", "GB": "GBP", "CH": "CHF", "AU": "AUD", "CN": "CNY", "JP": "JPY",
            "PL": "PLN", "SE": "SEK"}
SERVICES = ("remote-services", "car-finder", "navigation-plus")


class SimClock:
    """Simulated time running ``speed`` times faster than the wall clock; the day is anchored
    so that it ends at the real start time (every timestamp sent lies in the past)."""

    def __init__(self, speed: float, hours: float) -> None:
        self.speed = speed
        self.t0 = time.monotonic()
        self.start = time.time() - hours * 3600

    def now(self) -> float:
        return self.start + (time.monotonic() - self.t0) * self.speed

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


class SimCar:
    def __init__(self, car: Car, port: int, clock: SimClock, stats: Stats, rng: random.Random,
                 fod_failure_rate: float) -> None:
        self.car, self.port, self.clock, self.stats, self.rng = car, port, clock, stats, rng
        self.fod_failure_rate = fod_failure_rate
        self.seq = 0
        self.visited = car.home_country
        self.privacy = common_pb2.Privacy(mode=common_pb2.PRIVACY_MODE_OFF)
        self.client: aiomqtt.Client | None = None
        self.reader: asyncio.Task[None] | None = None
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
        client = aiomqtt.Client("127.0.0.1", self.port, identifier=self.car.vin,
                                protocol=aiomqtt.ProtocolVersion.V5, keepalive=60,
                                will=aiomqtt.Will(topics.will(self.car.vin), will, qos=1))
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
        await self.send(env)

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
            env.entitlement_ack.set_version = down.entitlement_set.version
            env.entitlement_ack.entitlement_ids.extend(i.entitlement_id for i in down.entitlement_set.items)
        elif body == "fod_command":
            cmd = down.fod_command
            ok = self.rng.random() >= self.fod_failure_rate
            r = env.fod_result
            r.command_id, r.entitlement_id, r.action = cmd.command_id, cmd.entitlement_id, cmd.action
            r.success = ok
            if not ok:
                r.error = "installation failed: charging connection active"
            self.stats.events["fod_success" if ok else "fod_failure"] += 1
        elif body == "remote_command":
            env.command_result.command_id = down.remote_command.command_id
            env.command_result.success = True
        else:
            return
        await self.send(env)

    # -- the day --
    async def drive(self, minutes: int) -> None:
        heading = self.rng.uniform(0, 2 * math.pi)
        crossing = self.rng.random() < 0.15 and self.car.home_country in NEIGHBOURS
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
        end = self.clock.now() + hours * 3600
        await self.rest(self.rng.uniform(5, 9) * 3600 * min(1.0, hours / 24), end)  # night: asleep
        while self.clock.now() < end:
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
            await self.rest(self.rng.uniform(0.2, 1.0) * 3600, end)  # parked, online
            if self.client is not None:
                await self.sleep_mode()
            await self.rest(self.rng.uniform(1, 6) * 3600, end)  # asleep
        if self.client is not None:
            await self.sleep_mode()


async def simulate(
    port: int, cars: int, hours: float, speed: float, seed: int, fod_failure_rate: float
) -> Stats:
    fleet = generate_fleet(cars, seed)
    clock = SimClock(speed, hours)
    stats = Stats()
    sims = [SimCar(c, port, clock, stats, random.Random(f"sim:{seed}:{c.vin}"), fod_failure_rate)
            for c in fleet]

    async def guarded(sim: SimCar) -> None:
        try:
            await sim.day(hours)
        except Exception as exc:  # one car's failure is reported, the day goes on
            stats.error(f"{sim.car.vin}: {type(exc).__name__}: {exc}")
            await sim._close(clean=False)

    await asyncio.gather(*(guarded(s) for s in sims))
    stats.events["charging_sessions"] = sum(s.sessions for s in sims)
    return stats


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m load.sim", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--port", type=int, default=0,
                    help="broker port on 127.0.0.1; 0: start a broker and the gateway here")
    ap.add_argument("--cars", type=int, default=100)
    ap.add_argument("--hours", type=float, default=24.0, help="simulated hours")
    ap.add_argument("--speed", type=float, default=1440.0, help="simulated seconds per real second")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--fod-failure-rate", type=float, default=0.1)
    a = ap.parse_args(argv)
    started = time.monotonic()
    if a.port:
        stats = asyncio.run(simulate(a.port, a.cars, a.hours, a.speed, a.seed, a.fod_failure_rate))
        checks: dict[str, Any] = {}
    else:
        stats, checks = with_gateway(a)
    print(json.dumps({"cars": a.cars, "hours": a.hours, "wall_s": round(time.monotonic() - started, 1),
                      "sent": dict(stats.sent), "downlinks": dict(stats.downlinks),
                      "events": dict(stats.events), "errors": stats.errors, "gateway": checks}, indent=1))
    failed = [k for k, v in checks.items() if isinstance(v, dict) and not v.get("ok", True)]
    return 0 if not stats.errors and not failed else 1


def with_gateway(a: argparse.Namespace) -> tuple[Stats, dict[str, Any]]:
    """Run the day against a fresh broker and gateway; compare what the gateway counted."""
    from load.harness import BenchBroker, GatewayProcess, metric_sum

    with tempfile.TemporaryDirectory(prefix="sim-") as tmp, BenchBroker(Path(tmp) / "broker") as broker:
        gw = GatewayProcess(Path(tmp) / "gateway", broker)
        try:
            gw.wait_ready()
            stats = asyncio.run(simulate(broker.port, a.cars, a.hours, a.speed, a.seed, a.fod_failure_rate))
            time.sleep(1.0)
            m = gw.metrics()
        finally:
            gw.stop()
            problems = gw.log_problems()

    def same(kind: str, counted: float) -> dict[str, Any]:
        return {"sent": stats.sent[kind], "gateway": counted, "ok": counted == stats.sent[kind]}

    checks: dict[str, Any] = {
        kind: same(kind, metric_sum(m, f'gateway_messages_received_total{{kind="{kind}"}}'))
        for kind in ("hello", "state_change", "telemetry", "charging_session", "goodbye",
                     "entitlement_ack", "fod_result", "command_result")
    }
    checks["charging_sessions_recorded"] = same(
        "charging_session", metric_sum(m, 'gateway_vehicle_events_total{kind="charging_session"}'))
    checks["vehicles_tracked"] = {"cars": a.cars, "gateway": metric_sum(m, "gateway_vehicles_tracked"),
                                  "ok": metric_sum(m, "gateway_vehicles_tracked") == a.cars}
    checks["online_at_end"] = metric_sum(m, "gateway_vehicles_online")
    checks["rejected"] = metric_sum(m, "gateway_messages_rejected_total")
    checks["wills"] = metric_sum(m, 'gateway_messages_received_total{kind="will"}')
    checks["log_problems"] = problems
    return stats, checks


if __name__ == "__main__":
    sys.exit(main())
