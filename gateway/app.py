"""Composition root: builds every component from the Config and runs them as named tasks.

Start order: broker (managed) -> store -> sessions loaded -> MQTT session -> gRPC -> HTTP.
Stop order is the reverse, with the pipeline drained before the MQTT session closes, so every
message read from the broker is processed and acknowledged (or left to the broker).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import ssl
from collections.abc import Sequence
from pathlib import Path
from typing import cast

from aiohttp import web
from grpc_health.v1 import health

from gateway import faults, topics
from gateway.api.auth import AuthInterceptor
from gateway.api.entitlements import EngineExplainer, EntitlementService
from gateway.api.explain import ExplainService
from gateway.api.observe import LatencyInterceptor
from gateway.api.security_codes import SecurityCodeGate, SecurityCodeService
from gateway.api.server import SERVICE_NAMES, ServerTls, build_server
from gateway.api.telemetry import TelemetryService
from gateway.api.vehicle_reads import MemoryReads, StoreReads
from gateway.api.vehicles import VehicleService
from gateway.broker.managed import ManagedBroker, TlsListener
from gateway.broker.quarantine import QuarantineOrders
from gateway.broker.supervisor import BrokerSupervisor
from gateway.clock import Clock, SystemClock
from gateway.config import Config, split_listen
from gateway.egress.jetstream import JetStreamSink, SinkUnavailable
from gateway.egress.sink import TelemetrySink
from gateway.egress.telemetry import TelemetryFanout
from gateway.entitlements.engine import EntitlementEngine
from gateway.entitlements.engine._shares import CarShares
from gateway.entitlements.engine.reference_hooks import ReferenceHooks
from gateway.entitlements.ledger import LedgerError
from gateway.entitlements.ledger.postgres import PostgresLedger
from gateway.entitlements.vehicle import VehicleUpdate
from gateway.health_status import HealthPublisher
from gateway.http import build_http_app
from gateway.ingress.broker_grants import BrokerGrants
from gateway.ingress.mqtt5 import InboundMessage, Mqtt5Client, MqttConnectError, MqttError, MqttSubscribeError
from gateway.ingress.mqtt_session import MqttSession
from gateway.ingress.mqtt_tls import MqttTls, MqttTlsError, client_context
from gateway.ingress.slot_ingress import SlotIngress, SlotStartError, build_slot_ingress
from gateway.ingress.slots import uses_slots
from gateway.liveness import Liveness, waiting_by_design
from gateway.metrics import Metrics
from gateway.pipeline import Message, Pipeline
from gateway.reference import ReferenceDataError, ReferenceStore
from gateway.security import credentials as creds
from gateway.security.code_store import SecurityCodes
from gateway.security.codes import LockoutPolicy
from gateway.security.pki import EmbeddedPki, PkiError, ensure_embedded_pki
from gateway.session.hub import EventHub
from gateway.session.quarantine import FloodQuarantine
from gateway.session.ratelimit import CarLimits
from gateway.session.tracker import SessionTracker
from gateway.store.availability import StoreAvailability
from gateway.store.backends import build_backends
from gateway.store.base import StoreError
from gateway.store.fleet_members_postgres import PostgresMembers
from gateway.store.pg_notify import OutboxListener, Wake
from gateway.store.pg_outbox import ENTITLEMENT_EVENTS, VEHICLE_EVENTS

log = logging.getLogger(__name__)

PRUNE_INTERVAL_S = 60.0
# The session expiry the gateway asks for: the broker keeps its subscriptions and queues what
# cars send for this long while the gateway is away (README "Architecture").
SESSION_EXPIRY_S = 7 * 24 * 3600


class GatewayStartError(Exception):
    """A component could not start; the message says which and why."""


class Gateway:
    def __init__(self, config: Config, *, clock: Clock | None = None) -> None:
        """config: plain settings. clock: injectable time (tests); the system clock otherwise."""
        self.config = config
        self.clock = clock or SystemClock()
        self.metrics = Metrics()
        self.hub = EventHub()
        self.entitlement_hub = EventHub()  # its own: outbox cursors are not vehicle-event cursors
        self.fanout = TelemetryFanout(queue_size=config.telemetry_subscriber_queue)
        # Where telemetry leaves the gateway (egress/sink.py): the live fan-out, or JetStream.
        self.jetstream = JetStreamSink(
            url=config.nats_url, stream=config.telemetry_stream,
            subject_prefix=config.telemetry_subject_prefix, metrics=self.metrics,
        ) if config.telemetry_sink == "jetstream" else None
        self.sink: TelemetrySink = self.jetstream if self.jetstream is not None else self.fanout
        data_dir = Path(config.data_dir)
        backends = build_backends(config, self.metrics)
        self.store = backends.store
        self._shared_store = backends.shared_store
        self._code_records = backends.code_records
        self._store_display = backends.display
        self.broker: ManagedBroker | None = None
        if config.broker_is_managed:
            pki = EmbeddedPki(config.pki_dir)
            self.broker = ManagedBroker(
                directory=data_dir / "broker",
                host=config.mqtt_host,
                port=config.mqtt_port,
                mosquitto=config.mosquitto_bin,
                max_packet_size=max(config.max_payload_bytes * 4, 256 * 1024),
                tls=TlsListener(
                    host=config.mqtt_tls_host.strip("[]"),
                    port=config.mqtt_tls_port,
                    cafile=pki.ca_cert,
                    certfile=pki.broker_cert,
                    keyfile=pki.broker_key,
                    gateway_identity=config.mqtt_client_id,
                ) if config.mqtt_tls_port else None,
            )
        # A managed broker that dies is started again (README "Architecture", Broker restarts).
        self.broker_supervisor = BrokerSupervisor(
            self.broker, restarts=self.metrics.broker_restarts
        ) if self.broker is not None else None
        self.broker_grants = BrokerGrants(
            asked_expiry_s=SESSION_EXPIRY_S, shared_group=config.mqtt_shared_group,
            short_s=config.mqtt_session_expiry_warn_s, gauge=self.metrics.mqtt_session_expiry,
        )
        self.tracker = SessionTracker()
        self.ledger = backends.ledger
        # Shared PostgreSQL: other gateways' commits wake this one's Watch streams (NOTIFY).
        self.outbox_listener = OutboxListener(
            url=config.store_url, metrics=self.metrics,
            wakes=(Wake(VEHICLE_EVENTS, self.hub.notify),
                   Wake(ENTITLEMENT_EVENTS, self.entitlement_hub.notify)),
        ) if config.store_url else None
        # /readyz "store": both databases take writes (probes and the pipeline's commits).
        self.availability = StoreAvailability(
            {"store": self.store.probe, "ledger": self.ledger.probe}, self.metrics
        )
        self.entitlements: EntitlementEngine | None = None
        self.reference: ReferenceStore | None = None
        self.explain: ExplainService | None = None
        self.security_codes: SecurityCodes | None = None
        self.mqtt: MqttSession | SlotIngress | None = None
        self.pipeline: Pipeline | None = None
        self.grpc_port = 0
        # data_dir/credentials/admin.token when the embedded default manages credentials.
        self.admin_token_path: Path | None = None
        self.http_port = 0
        self._grpc_server: object | None = None
        self._http_runner: web.AppRunner | None = None
        self._health = health.aio.HealthServicer()
        # grpc.health.v1 follows readiness (the one source of truth, also /readyz).
        self.health = HealthPublisher(
            readiness=self.readiness, servicer=self._health, services=("", *SERVICE_NAMES)
        )
        self.liveness: Liveness | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = False

    # -- lifecycle --
    async def start(self) -> None:
        cfg = self.config
        try:
            # First: a bad data file must stop the start before anything else runs.
            self.reference = reference = ReferenceStore.load(Path(cfg.reference_dir))
        except ReferenceDataError as exc:
            raise GatewayStartError(f"bad reference data in {cfg.reference_dir}:\n{exc}") from exc
        log.info("reference data: %s", reference.current.summary())
        try:
            faults.kill_point()  # a malformed test-only GATEWAY_TEST_KILL stops the start too
        except faults.FaultConfigError as exc:
            raise GatewayStartError(str(exc)) from exc
        address = cfg.broker()
        username, password = address.username, address.password
        tls = self._mqtt_tls() if address.tls else None
        if self.broker is not None:
            # On the main thread (blocks ~50 ms once): the broker's death signal follows it.
            login = self.broker.start_sync()
            if tls is None:  # on the TLS listener the gateway is known by its certificate
                username, password = login.username, login.password
            self._log_listeners()
        await self.store.open()
        self.tracker = SessionTracker(await self.store.load_sessions(), restored_at=self.clock.now())
        log.info(
            "store open (%s), %d vehicle sessions loaded", self._store_display, len(self.tracker.sessions)
        )
        await self.ledger.open()
        if self.outbox_listener is not None:
            await self.outbox_listener.start()
        hooks = ReferenceHooks(reference=reference, metrics=self.metrics)
        self.entitlements = engine = EntitlementEngine(
            ledger=self.ledger,
            clock=self.clock,
            metrics=self.metrics,
            publish=self.publish_downlink,
            session_of=lambda vin: self.tracker.get(vin),
            hub=self.entitlement_hub,
            service_available=hooks.offered,
            offered_for_model=hooks.offered_for_model,
            fod_retry_steps=hooks.fod_retry_steps,
            link_good=hooks.link_good,
            idle_s=cfg.fod_idle_s,
            ack_timeout_s=cfg.entitlement_ack_timeout_s,
            # Shared PostgreSQL: the engine's view follows the other gateways' writes.
            peers=self.ledger if isinstance(self.ledger, PostgresLedger) else None,
        )
        await engine.start()
        if self.jetstream is not None:
            try:
                await self.jetstream.start()
            except SinkUnavailable as exc:
                raise GatewayStartError(str(exc)) from exc
            log.info("telemetry sink: JetStream stream %s at %s",
                     self.jetstream.stream, self.jetstream.display)

        holder: list[MqttSession | SlotIngress] = []
        # Test-only crash points (gateway/faults.py); None unless GATEWAY_TEST_KILL is set.
        kill_before_ack = faults.killer("before_ack")
        kill_after_entitlements = faults.killer("after_entitlements")

        def ack(messages: Sequence[Message]) -> None:
            if kill_before_ack is not None:
                kill_before_ack(len(messages))  # committed, not yet acknowledged
            holder[0].ack(cast(Sequence[InboundMessage], messages))

        async def on_updates(updates: Sequence[VehicleUpdate]) -> None:
            await engine.on_vehicle_batch(updates)
            if kill_after_entitlements is not None:
                kill_after_entitlements(len(updates))  # the ledger has them, the session store not yet

        quarantine = FloodQuarantine(
            excess=cfg.car_quarantine_excess,
            window_s=cfg.car_quarantine_window_s,
            duration_s=cfg.car_quarantine_s,
        ) if cfg.car_quarantine_excess else None
        limits = CarLimits(cfg.car_rate_per_s, cfg.car_burst, cfg.car_hello_rate_per_s, cfg.car_hello_burst,
                           quarantine)
        self.pipeline = pipeline = Pipeline(
            tracker=self.tracker,
            store=self.store,
            hub=self.hub,
            telemetry=self.sink,
            metrics=self.metrics,
            clock=self.clock,
            reference=reference,
            max_payload_bytes=cfg.max_payload_bytes,
            queue_messages=cfg.ingress_queue_messages,
            ack=ack,
            pause_reading=lambda: holder[0].pause_reading(),
            resume_reading=lambda: holder[0].resume_reading(),
            entitlements=on_updates,
            heartbeat_default_s=cfg.heartbeat_default_s,
            limits=limits,
            quarantine_changed=QuarantineOrders(quarantine, self.broker, self.metrics).changed
            if quarantine is not None else None,
            outcome=self.availability.report,
            shared_store=self._shared_store,
        )

        def on_session(present: bool) -> None:
            if present:  # the broker kept our session: it now delivers what it queued meanwhile
                limits.catch_up(self.clock.now(), cfg.car_limit_catch_up_s)

        def make_client(client_id: str = cfg.mqtt_client_id) -> Mqtt5Client:
            return Mqtt5Client(
                host=address.host,
                port=address.port,
                client_id=client_id,
                username=username,
                password=password,
                clean_start=False,  # persistent: the broker keeps what we have not acked
                session_expiry_s=SESSION_EXPIRY_S,
                on_batch=pipeline.on_batch,
                tls=tls,
            )

        def make_publisher() -> Mqtt5Client:
            # Publish-only (a standby's downlinks): a clean session of its own that the broker
            # forgets at disconnect, under a client id no slot and no other gateway uses.
            return Mqtt5Client(
                host=address.host,
                port=address.port,
                client_id=f"{cfg.mqtt_client_id}-pub-{secrets.token_hex(4)}",
                username=username,
                password=password,
                clean_start=True,
                session_expiry_s=0,
                on_batch=lambda _batch: None,  # subscribed to nothing
                tls=tls,
            )

        subscriptions = [(f, 1) for f in topics.subscriptions(cfg.mqtt_shared_group)]
        if uses_slots(cfg):  # several gateways may share the broker: leased client ids (slots.py)
            self.mqtt = build_slot_ingress(
                cfg, make_client, subscriptions, self.metrics, on_session, self.broker_grants.check,
                make_publisher,
            )
            if isinstance(self.ledger, PostgresLedger):  # each car's time-driven work: one live gateway
                members = PostgresMembers(self.ledger.database)
                engine.shares = CarShares(me=self.mqtt.holder, read_members=members.live, clock=self.clock)
        else:
            self.mqtt = MqttSession(
                make_client=make_client,
                subscriptions=subscriptions,
                on_connected=lambda _present: self._mqtt_up(True),
                on_session=on_session,
                on_disconnected=lambda _exc: self._mqtt_up(False),
                on_reconnect=self.metrics.mqtt_reconnects.inc,
                check_connack=self.broker_grants.check,
            )
        holder.append(self.mqtt)
        try:
            await self.mqtt.start()
        except MqttConnectError as exc:
            raise GatewayStartError(f"cannot connect to the MQTT broker at {address.display}: {exc}") from exc
        except MqttSubscribeError as exc:  # e.g. 0x9e: a broker without shared subscriptions
            raise GatewayStartError(str(exc)) from exc
        except SlotStartError as exc:
            raise GatewayStartError(f"{exc} ({self._store_display})") from exc
        self.metrics.mqtt_connected.set(1 if self.mqtt.connected else 0)

        # R7: security codes live in the ledger's database, beside the accounts they belong to.
        policy = LockoutPolicy(cfg.security_code_max_failures, cfg.security_code_lockout_s)
        self.security_codes = codes = SecurityCodes(
            records=self._code_records, clock=self.clock, policy=policy
        )
        # Shared PostgreSQL: each car's session is in the memory of the gateway it talks to.
        reads = StoreReads(self.store) if cfg.store_url else MemoryReads(self.tracker)
        vehicles = VehicleService(
            tracker=self.tracker, store=self.store, hub=self.hub, metrics=self.metrics,
            publish=self.publish_downlink, reference=reference,
            security=SecurityCodeGate(
                codes=codes, owner_of=self.ledger.get_owner, metrics=self.metrics, clock=self.clock,
                policy=policy,
            ),
            reads=reads,
        )
        telemetry = TelemetryService(fanout=self.fanout, metrics=self.metrics, jetstream=self.jetstream)
        self.explain = ExplainService(
            session_of=reads.get,
            reference=reference,
            reference_root=Path(cfg.reference_dir),
            metrics=self.metrics,
            entitlements=EngineExplainer(engine=engine),
        )
        credentials = self._open_credentials()
        grpc_tls = self._grpc_tls()
        server, self.grpc_port = build_server(
            listen=cfg.grpc_listen,
            vehicles=vehicles,
            telemetry=telemetry,
            explain=self.explain,
            entitlements=EntitlementService(
                engine=engine, ledger=self.ledger, hub=self.entitlement_hub, metrics=self.metrics,
                reference=reference,
            ),
            security_codes=SecurityCodeService(
                codes=codes, owned_vins=self.ledger.owned_vins, metrics=self.metrics,
                clock=self.clock, policy=policy,
            ),
            health_servicer=self._health,
            # Latency first: it times a call the authentication check refuses, too.
            interceptors=[
                LatencyInterceptor(metrics=self.metrics),
                AuthInterceptor(credentials=credentials, metrics=self.metrics),
            ],
            tls=grpc_tls,
        )
        await server.start()
        self._grpc_server = server
        await self.health.publish()
        self.liveness = Liveness(
            clock=self.clock, wedge_after_s=cfg.wedge_after_s,
            backlog=lambda: pipeline.queued, progress=lambda: pipeline.processed,
            excused=self._standstill_excused,
        )

        host, port = split_listen(cfg.http_listen, "http_listen")
        self._http_runner = web.AppRunner(
            build_http_app(
                registry=self.metrics.registry, readiness=self.readiness, warnings=self.readiness_warnings,
                liveness=self.liveness.wedged,
            ),
            access_log=None,
        )
        await self._http_runner.setup()
        site = web.TCPSite(self._http_runner, host, port)
        await site.start()
        self.http_port = self._http_runner.addresses[0][1]

        self._tasks = [
            asyncio.create_task(pipeline.run(), name="gateway.pipeline"),
            asyncio.create_task(self.mqtt.run(), name="gateway.mqtt-session"),
            asyncio.create_task(self._prune_loop(), name="gateway.event-pruning"),
            asyncio.create_task(engine.run(), name="gateway.entitlements"),
            asyncio.create_task(self.availability.run(), name="gateway.store-availability"),
            asyncio.create_task(self.health.run(), name="gateway.health"),
        ]
        if self.broker_supervisor is not None:
            supervise = self.broker_supervisor.run()
            self._tasks.append(asyncio.create_task(supervise, name="gateway.broker-supervisor"))
        if self.outbox_listener is not None:
            listen = self.outbox_listener.run()
            self._tasks.append(asyncio.create_task(listen, name="gateway.outbox-listener"))
        log.info(
            "gateway up: mqtt %s, grpc %s:%d, http %s:%d",
            address.display, cfg.grpc_listen.rpartition(":")[0], self.grpc_port, host, self.http_port,
        )

    def _mqtt_tls(self) -> ssl.SSLContext:
        """The gateway's TLS to its broker. With the managed broker: the development CA and the
        gateway's own certificate in data_dir/pki, created on first start (README "Identity")."""
        cfg = self.config
        ca = Path(cfg.mqtt_ca_file) if cfg.mqtt_ca_file else None
        cert = Path(cfg.mqtt_cert_file) if cfg.mqtt_cert_file else None
        key = Path(cfg.mqtt_key_file) if cfg.mqtt_key_file else None
        if self.broker is not None:
            try:
                pki, created = ensure_embedded_pki(
                    cfg.pki_dir, gateway_identity=cfg.mqtt_client_id, broker_hosts=[cfg.tls_connect_host]
                )
            except (PkiError, OSError) as exc:
                message = f"cannot create the broker's certificates in {cfg.pki_dir}: {exc}"
                raise GatewayStartError(message) from exc
            if created:
                log.info("created in %s: %s", pki.directory, ", ".join(p.name for p in created))
            log.info(
                "identity: development CA %s, gateway certificate %s (CN %s); issue a car certificate "
                "with `telematics-gateway pki issue-car <VIN>` (writes %s/<VIN>.crt, .key and ca.crt)",
                pki.ca_cert, pki.gateway_cert, cfg.mqtt_client_id, pki.cars,
            )
            ca = ca or pki.ca_cert
            if cert is None:
                cert, key = pki.gateway_cert, pki.gateway_key
        try:
            return client_context(MqttTls(ca, cert, key))
        except MqttTlsError as exc:
            raise GatewayStartError(str(exc)) from exc

    def _log_listeners(self) -> None:
        """Say which listeners are open, and that the plain one checks nobody."""
        assert self.broker is not None
        broker, cfg = self.broker, self.config
        if broker.tls is not None:
            log.info(
                "managed mosquitto (pid %s): TLS listener mqtts://%s:%d, client certificate required "
                "(identity = certificate CN: a car's VIN, or the gateway's %s)",
                broker.pid, cfg.mqtt_tls_host, broker.tls.port, cfg.mqtt_client_id,
            )
        else:
            log.info("managed mosquitto (pid %s): no TLS listener (mqtt_tls_port = 0)", broker.pid)
        log.warning(
            "managed mosquitto: plain listener mqtt://%s:%d is UNAUTHENTICATED (any local process can "
            "pose as any car); loopback only, for the demo and the simulator",
            cfg.mqtt_host, cfg.mqtt_port,
        )

    def _open_credentials(self) -> creds.CredentialSource:
        """The backend credentials (README: Backend authentication); on the first start of the
        embedded default an admin credential whose token is written to a 0600 file."""
        cfg = self.config
        try:
            fixed = creds.parse_entries(cfg.grpc_credentials)
            if cfg.grpc_credentials_file:
                return creds.CredentialSource(Path(cfg.grpc_credentials_file), fixed)
            directory = Path(cfg.data_dir) / creds.CREDENTIALS_DIR
            created = creds.ensure_admin(directory)
            source = creds.CredentialSource(directory / creds.CREDENTIALS_FILE, fixed)
        except (creds.CredentialError, OSError) as exc:
            raise GatewayStartError(f"backend credentials: {exc}") from exc
        token = directory / creds.ADMIN_TOKEN_FILE
        if token.exists():
            self.admin_token_path = token
            # The path only, never the token.
            log.info(
                "gRPC needs a bearer token: admin token %s in %s (grpcurl -H \"authorization: Bearer"
                " $(cat %s)\"); more with `telematics-gateway credentials add`",
                "created" if created else "kept", token, token,
            )
        return source

    def _grpc_tls(self) -> ServerTls | None:
        cfg = self.config
        if not cfg.grpc_tls_cert:
            log.info("gRPC: plaintext on loopback %s (grpc_tls_cert, grpc_tls_key: TLS)", cfg.grpc_listen)
            return None

        def read(key: str, path: str) -> bytes:
            try:
                return Path(path).read_bytes()
            except OSError as exc:
                raise GatewayStartError(f"{key}: cannot read {path}: {exc.strerror}") from None

        tls = ServerTls(
            cert_chain=read("grpc_tls_cert", cfg.grpc_tls_cert),
            private_key=read("grpc_tls_key", cfg.grpc_tls_key),
            client_ca=(read("grpc_tls_client_ca", cfg.grpc_tls_client_ca) if cfg.grpc_tls_client_ca
                       else None),
        )
        mutual = " with client certificates (mutual TLS)" if tls.client_ca else ""
        log.info("gRPC: TLS%s on %s", mutual, cfg.grpc_listen)
        return tls

    async def publish_downlink(self, topic: str, payload: bytes) -> None:
        """QoS 1 to a car; raises MqttError when the broker refuses or the session is down."""
        assert self.mqtt is not None
        code = await self.mqtt.publish(topic, payload, qos=1)
        if code >= 0x80:  # MQTT 5 reason codes below 0x80 are successes (0x10: no subscriber yet)
            raise MqttError(f"broker refused the publish to {topic}: reason code {code:#x}")

    def _mqtt_up(self, up: bool) -> None:
        self.metrics.mqtt_connected.set(1 if up else 0)
        self.health.poke()  # gRPC health follows the session at once

    def _standstill_excused(self) -> bool:
        return waiting_by_design(
            store_available=self.availability.available,
            sink_ready=self.jetstream is None or self.jetstream.ready,
            fanout=self.fanout,
        )

    def readiness(self) -> dict[str, bool]:
        parts = {
            "mqtt": bool(self.mqtt and self.mqtt.connected) and not self._stopping,
            "store": self.store.is_open and self.ledger.is_open and self.availability.available,
        }
        if self.broker_supervisor is not None:  # the managed broker's process (being restarted)
            parts["broker"] = self.broker_supervisor.up
        if self.jetstream is not None:  # the durable sink takes records (else nothing is acked)
            parts["telemetry_sink"] = self.jetstream.ready
        return parts

    def readiness_warnings(self) -> list[str]:
        """Conditions /readyz shows without taking the gateway out of service."""
        short_expiry = self.broker_grants.warning()
        return [short_expiry] if short_expiry else []

    def reload_reference(self) -> tuple[bool, str]:
        """SIGHUP: swap in freshly validated data, or keep the old snapshot and say why."""
        assert self.reference is not None
        ok, message = self.reference.reload(Path(self.config.reference_dir))
        self.metrics.reference_reloads.labels("ok" if ok else "kept_old").inc()
        (log.info if ok else log.error)("reference data reload (SIGHUP): %s", message,
                                        extra={"event": "reference_reload", "trigger": "sighup", "ok": ok})
        return ok, message

    async def _prune_loop(self) -> None:
        while True:
            await asyncio.sleep(PRUNE_INTERVAL_S)
            try:
                await self.prune_once()
            except (StoreError, LedgerError) as exc:  # the database is down: the next round prunes
                log.warning("pruning old events failed: %s", exc)

    async def prune_once(self) -> tuple[int, int]:
        """Drop what is beyond retention from the vehicle event log and the entitlement outbox
        (Watch streams answer OUT_OF_RANGE for a cursor before what is kept); return the counts."""
        vehicle = await self.store.prune_events(self.config.event_retention)
        entitlement = await self.ledger.prune_events(self.config.entitlement_event_retention)
        if vehicle or entitlement:
            log.info("pruned %d old vehicle events, %d old entitlement events", vehicle, entitlement)
        return vehicle, entitlement

    async def wait(self) -> None:
        """Return when a component task ends on its own (a failure); raise its error."""
        if not self._tasks:
            return
        done, _ = await asyncio.wait(self._tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            if not task.cancelled() and task.exception() is not None:
                raise cast(BaseException, task.exception())

    async def stop(self) -> None:
        """Graceful: stop reading, drain, disconnect, stop servers, close store, stop broker."""
        if self._stopping:
            return
        self._stopping = True
        grace = self.config.shutdown_grace_s
        await self._health.enter_graceful_shutdown()
        if self.mqtt is not None:
            with contextlib.suppress(Exception):
                self.mqtt.pause_reading()
        by_name = {t.get_name(): t for t in self._tasks}
        pipeline_task = by_name.get("gateway.pipeline")
        if self.pipeline is not None and pipeline_task is not None and not pipeline_task.done():
            # The running batch finishes, then whatever is still queued is processed and acked.
            self.pipeline.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(pipeline_task), grace)
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if isinstance(self.mqtt, SlotIngress):
            # Bounded by itself and never cut short: it ends by releasing the leases, so the
            # other gateways take the slots over at once instead of after the lease expired.
            with contextlib.suppress(Exception):
                await self.mqtt.stop()
        elif self.mqtt is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.mqtt.stop(), grace)
        # Streams end after what they have, with UNAVAILABLE "going away" (clients resume from
        # their cursor), so stopping the server does not wait out the grace period for them.
        self.hub.close(going_away=True)
        self.entitlement_hub.close(going_away=True)
        self.fanout.close(going_away=True)
        if self.jetstream is not None:
            await self.jetstream.close()  # its readers end after what they have
        if self._grpc_server is not None:
            await self._grpc_server.stop(grace)  # type: ignore[attr-defined]
        if self._http_runner is not None:
            await self._http_runner.cleanup()
        if self.outbox_listener is not None:
            await self.outbox_listener.close()
        await self.ledger.close()
        await self.store.close()
        if self.broker is not None:
            await self.broker.stop()
        log.info("gateway stopped")

