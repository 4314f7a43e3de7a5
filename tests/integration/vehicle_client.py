"""A test vehicle on aiomqtt (paho): an MQTT implementation independent of the gateway's."""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import ssl
import time
from dataclasses import dataclass
from typing import Any

import aiomqtt

from gateway import topics
from gateway._gen.telematics.v1 import common_pb2, downlink_pb2, uplink_pb2


@dataclass(frozen=True)
class CarLink:
    """Where and how a test car logs in on the broker the test's gateway uses."""

    port: int
    username: str | None = None
    password: str | None = None

    def vehicle(self, vin: str, **kwargs: Any) -> TestVehicle:
        return TestVehicle(vin, self.port, username=self.username, password=self.password, **kwargs)


class TestVehicle:
    __test__ = False  # not a test class

    def __init__(
        self,
        vin: str,
        port: int,
        *,
        model: str = "911",
        model_year: int = 2018,
        bearer: int = common_pb2.BEARER_INSERTED_SIM,
        home_country: str = "DE",
        visited_country: str = "DE",
        roaming: bool = False,
        roaming_enabled: bool = False,
        radio: int = common_pb2.RADIO_4G,
        tls: ssl.SSLContext | None = None,
        client_id: str | None = None,
        username: str | None = None,
        password: str | None = None,
    ) -> None:
        """tls: connect over TLS with this context (the car's certificate; ``port`` is then the
        broker's TLS listener). client_id: the MQTT client id asked for (default: the VIN).
        username, password: a login (brokers that refuse a CONNECT without one, e.g. ejabberd)."""
        self.username = username
        self.password = password
        self.vin = vin
        self.tls = tls
        self.client_id = client_id if client_id is not None else vin
        self.port = port
        self.model = model
        self.model_year = model_year
        self.bearer = bearer
        self.home_country = home_country
        self.visited_country = visited_country
        self.roaming = roaming
        self.roaming_enabled = roaming_enabled
        self.radio = radio
        self.privacy = common_pb2.Privacy(mode=common_pb2.PRIVACY_MODE_OFF)
        self.sequence = 0
        # The head-unit install's sequence epoch, sent on every envelope (0: the old contract).
        self.sequence_epoch = 0
        self.heartbeat_interval_s = 0  # announced in the Hello; 0: none
        self.connection_id = 0
        self.client: aiomqtt.Client | None = None
        self.downlinks: asyncio.Queue[downlink_pb2.Downlink] = asyncio.Queue()
        self._reader: asyncio.Task[None] | None = None

    def envelope(self) -> uplink_pb2.Envelope:
        self.sequence += 1
        env = uplink_pb2.Envelope(
            vin=self.vin,
            sequence=self.sequence,
            sequence_epoch=self.sequence_epoch,
            # The attributes are plain ints (tests assign raw enum numbers); the envelope wants the enum type.
            bearer=common_pb2.Bearer.ValueType(self.bearer),
            radio=common_pb2.Radio.ValueType(self.radio),
            visited_country=self.visited_country,
            roaming=self.roaming,
            roaming_enabled=self.roaming_enabled,
        )
        env.privacy.CopyFrom(self.privacy)
        env.sent_at.FromNanoseconds(time.time_ns())
        return env

    def reset_head_unit(self) -> None:
        """A replaced or factory-reset head unit: a new sequence epoch, counting from 1 again."""
        self.sequence_epoch = random.getrandbits(64) or 1
        self.sequence = 0

    async def connect(
        self, *, boot: bool = True, with_will: bool = True, listen: bool = False, **state: Any
    ) -> None:
        """with_will=False: a client that sets no MQTT will (as mosquitto_pub does). listen=True:
        subscribe to the downlink topic before the Hello, as a real car does, so a downlink
        answering the Hello (an entitlement set on boot) cannot be missed."""
        self.connection_id = random.getrandbits(64)
        will = uplink_pb2.LastWill(vin=self.vin, connection_id=self.connection_id)
        self.client = aiomqtt.Client(
            "127.0.0.1",
            self.port,
            identifier=self.client_id,
            protocol=aiomqtt.ProtocolVersion.V5,
            tls_context=self.tls,
            username=self.username,
            password=self.password,
            will=aiomqtt.Will(topics.will(self.vin), will.SerializeToString(), qos=1) if with_will else None,
            keepalive=30,
        )
        await self.client.__aenter__()
        if listen:
            await self.listen()
        env = self.envelope()
        env.hello.connection_id = self.connection_id
        env.hello.boot = boot
        env.hello.model = self.model
        env.hello.model_year = self.model_year
        env.hello.home_country = self.home_country
        env.hello.state.power = state.get("power", common_pb2.POWER_STATE_ON)
        env.hello.state.lock = state.get("lock", common_pb2.LOCK_STATE_UNLOCKED)
        env.hello.state.charging_plug = state.get("plug", common_pb2.CHARGING_PLUG_DISCONNECTED)
        env.hello.heartbeat_interval_s = self.heartbeat_interval_s
        await self.publish(env)

    async def listen(self) -> None:
        """Subscribe to this car's downlink topic; messages land in ``self.downlinks``."""
        assert self.client is not None
        client = self.client
        await client.subscribe(topics.downlink(self.vin), qos=1)

        async def read() -> None:
            with contextlib.suppress(aiomqtt.MqttError):
                async for message in client.messages:
                    self.downlinks.put_nowait(downlink_pb2.Downlink.FromString(bytes(message.payload)))

        self._reader = asyncio.create_task(read(), name=f"test-vehicle[{self.vin}].downlink")

    async def publish(self, env: uplink_pb2.Envelope | bytes, *, topic: str = "", qos: int = 1) -> None:
        assert self.client is not None
        payload = env if isinstance(env, bytes) else env.SerializeToString()
        await self.client.publish(topic or topics.uplink(self.vin), payload, qos=qos)

    async def state(self, **fields: int) -> None:
        env = self.envelope()
        for name, value in fields.items():
            setattr(env.state_change.state, name, value)
        await self.publish(env)

    async def telemetry(self, service: str, *, lat: float = 48.8, lon: float = 9.2, n: int = 1) -> None:
        env = self.envelope()
        env.telemetry.service = service
        for _ in range(n):
            sample = env.telemetry.samples.add()
            sample.sampled_at.FromNanoseconds(time.time_ns())
            sample.location.latitude = lat
            sample.location.longitude = lon
            sample.signals.add(name="speed_kmh", number=50.0)
        await self.publish(env)

    async def charging_session(self, session_id: str, *, energy_kwh: float = 20.0) -> None:
        env = self.envelope()
        cs = env.charging_session
        cs.session_id = session_id
        cs.energy_kwh = energy_kwh
        cs.currency = "EUR"
        cs.power_class = "DC150"
        # A valid session (gateway/validate.py) in the past of both the real and the tests' clock.
        cs.started_at.seconds = 1_748_736_000  # 2025-06-01T00:00:00Z
        cs.ended_at.seconds = cs.started_at.seconds + 3_600
        await self.publish(env)

    async def heartbeat(self) -> None:
        env = self.envelope()
        env.heartbeat.SetInParent()
        await self.publish(env)

    async def publish_own_will(self) -> None:
        """Publish the LastWill of the current connection on the will topic while connected."""
        will = uplink_pb2.LastWill(vin=self.vin, connection_id=self.connection_id)
        await self.publish(will.SerializeToString(), topic=topics.will(self.vin))

    async def goodbye(self) -> None:
        env = self.envelope()
        env.goodbye.reason = "ignition off"
        await self.publish(env)
        assert self.client is not None
        await self.client.__aexit__(None, None, None)
        self.client = None

    def cut(self) -> None:
        """Lose the link: the TCP connection ends without MQTT DISCONNECT (the will fires)."""
        assert self.client is not None
        sock = self.client._client.socket()
        if isinstance(sock, socket.socket):
            # shutdown, not close: the old client's loop still owns the descriptor and closes it
            # itself once it reads the end of the stream.
            sock.shutdown(socket.SHUT_RDWR)
        self.client = None

    async def close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
        if self.client is not None:
            with contextlib.suppress(aiomqtt.MqttError):
                await self.client.__aexit__(None, None, None)
            self.client = None


