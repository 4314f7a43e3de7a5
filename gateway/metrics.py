"""Every Prometheus metric of the gateway, defined once.

Labels are bounded enums (message kind, reject reason, bearer, gRPC method and code); never a
VIN. A registry per gateway instance keeps in-process tests independent. Hot-path children are
resolved once here, so the pipeline pays a plain ``inc`` per batch, not a ``labels`` lookup.
"""

from __future__ import annotations

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
)

from gateway.entitlements.domain.eligibility import BlockerCode
from gateway.entitlements.domain.types import EntitlementState, FodAction, LifecycleEventKind
from gateway.session.events import EventKind
from gateway.version import gateway_version, python_version

MESSAGE_KINDS = (
    "hello",
    "state_change",
    "telemetry",
    "charging_session",
    "entitlement_ack",
    "fod_result",
    "command_result",
    "goodbye",
    "heartbeat",
    "will",
)

REJECT_REASONS = (
    "bad_topic",
    "vin_syntax",
    "vin_mismatch",
    "oversize",
    "malformed_protobuf",
    "unknown_enum",
    "missing_body",
    "sequence_missing",
    # field ranges (gateway/validate.py; README "MQTT topics" -> Validation)
    "bad_timestamp",
    "bad_location",
    "bad_signal",
    "bad_charging_session",
    "bad_country",
    "bad_model_year",
    "bad_string",
    "too_many_items",
    "sequence_jump",  # more than MAX_JUMP ahead of the car's highest sequence (session/sequence.py)
    # per-car limits (gateway/session/ratelimit.py; README "MQTT topics" -> Limits)
    "rate_limited",  # over car_rate_per_s / car_burst: any message of the car, valid or not
    "hello_rate_limited",  # over car_hello_rate_per_s / car_hello_burst: a reconnect storm
    "quarantined",  # the car flooded far over its limit and is shut out for a while (session/quarantine.py)
)

# gateway_security_code_checks_total{result}: gateway/security/codes.py Attempt (R7).
SECURITY_CODE_RESULTS = ("ok", "wrong", "locked", "missing", "not_set")
SECURITY_CODE_CHANGES = ("set", "changed", "reset")

# gateway_messages_stale_total{outcome}: see gateway/session/sequence.py Arrival.
STALE_OUTCOMES = ("duplicate", "late", "too_old", "other_epoch")

# gateway_store_statement_timeouts_total{database}: the pools of gateway/store/backends.py.
STATEMENT_DATABASES = ("store", "ledger", "leases")

# gateway_telemetry_sink_failures_total{reason}: see gateway/egress/jetstream.py _store().
SINK_FAILURE_REASONS = ("timeout", "no_stream", "disconnected", "error")

# gateway_grpc_auth_denied_total{reason}: see gateway/api/auth.py decide().
AUTH_DENIAL_REASONS = ("missing_credential", "invalid_credential", "missing_scope")

BEARERS = ("embedded_sim", "inserted_sim", "wifi_hotspot", "unspecified")

# Known label values of the remaining labelled series, each initialised at start so that every
# series exists before its first event (rate() works; no alert needs absent()).
STORE_COMPONENTS = ("store", "ledger")  # gateway/store/availability.py (app.py's probes)
COMMIT_STEPS = ("entitlements", "store")  # gateway/pipeline/durable.py make_durable
VEHICLE_EVENT_KINDS = tuple(k.value for k in EventKind)
TELEMETRY_OUTCOMES = ("forwarded", "no_subscriber")
# The pipeline applies R22 (privacy) to every uplink record: allow or redact.
PIPELINE_RULE_DECISIONS = (("R22", "allow"), ("R22", "redact"))
GRACE_OUTCOMES = ("started", "reconnected", "expired")
RELOAD_RESULTS = ("ok", "kept_old")
# The domain's enums (a new state, event kind, action or blocker has its series from the start;
# gateway_entitlements counts live ones only: not revoked).
ENTITLEMENT_STATES = tuple(s.value for s in EntitlementState if s is not EntitlementState.REVOKED)
FOD_ACTIONS = tuple(a.value for a in FodAction)
FOD_BLOCKERS = tuple(b.value for b in BlockerCode)  # the R17 preconditions
ENTITLEMENT_EVENT_KINDS = tuple(k.value for k in LifecycleEventKind)
DOWNLINK_KINDS = ("set", "fod_command")
DOWNLINK_OUTCOMES = ("ok", "error")
OUTBOXES = ("vehicle_events", "entitlement_events")  # gateway/store/pg_outbox.py
NOTIFICATION_OUTCOMES = ("ok", "bad_payload")


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        # The standard series every Prometheus dashboard expects (process_cpu_seconds_total,
        # process_resident_memory_bytes, python_info, python_gc_*): on our own registry, which
        # keeps in-process tests independent, they are not there by themselves.
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        GCCollector(registry=r)
        self.build_info = Gauge(
            "gateway_build_info", "Always 1; the labels say which gateway build runs",
            ["version", "python"], registry=r,
        )
        self.build_info.labels(gateway_version(), python_version()).set(1)
        self.messages_received = Counter(
            "gateway_messages_received_total",
            "Valid uplink messages by kind",
            ["kind"],
            registry=r,
        )
        self.messages_rejected = Counter(
            "gateway_messages_rejected_total",
            "Uplink messages refused by validation, by reason",
            ["reason"],
            registry=r,
        )
        self.messages_stale = Counter(
            "gateway_messages_stale_total",
            "Uplink messages that change no state: at or below the vehicle's last sequence, or of"
            " a sequence epoch not current, by outcome",
            # duplicate (dropped), late (data kept, state untouched), too_old (dropped; kept as
            # late on a shared store, README "One car, several gateways"),
            # other_epoch (an epoch without a Hello: data kept, state untouched)
            ["outcome"],
            registry=r,
        )
        self.vehicles_online = Gauge(
            "gateway_vehicles_online", "Vehicles online, by bearer", ["bearer"], registry=r
        )
        self.vehicles_tracked = Gauge(
            "gateway_vehicles_tracked", "Vehicles with a session in memory", registry=r
        )
        self.cars_quarantined = Gauge(
            "gateway_cars_quarantined",
            "Cars quarantined for flooding: their uplink is dropped (by the managed broker)",
            registry=r,
        )
        self.car_quarantines = Counter(
            "gateway_car_quarantines_total", "Cars put in quarantine for flooding", registry=r
        )
        self.quarantine_order_failures = Counter(
            "gateway_quarantine_order_failures_total",
            "Times the managed broker could not be told which cars' uplink to drop",
            registry=r,
        )
        self.mqtt_connected = Gauge(
            "gateway_mqtt_connected", "1 while the gateway's broker session is up", registry=r
        )
        self.mqtt_reconnects = Counter(
            "gateway_mqtt_reconnects_total", "Reconnections to the broker", registry=r
        )
        self.mqtt_session_expiry = Gauge(
            "gateway_mqtt_session_expiry_seconds",
            "Session expiry the broker granted on the last connect (what it keeps while we are away)",
            registry=r,
        )
        self.broker_restarts = Counter(
            "gateway_broker_restarts_total", "Restarts of the managed broker after it died", registry=r
        )
        # Ingest slots (gateway/ingress/slots.py): only with store_url and an external broker.
        self.ingest_slots_held = Gauge(
            "gateway_ingest_slots_held", "Ingest slots (MQTT client ids) this gateway holds a lease on",
            registry=r,
        )
        self.ingest_slot_changes = Counter(
            "gateway_ingest_slot_changes_total",
            "Ingest slot leases claimed, lost (not renewed in time, or taken) and released",
            ["change"],
            registry=r,
        )
        for change in ("claimed", "lost", "released"):
            self.ingest_slot_changes.labels(change)
        self.ingest_lease_errors = Counter(
            "gateway_ingest_lease_errors_total",
            "Lease renewal rounds that failed (database unreachable or too slow)",
            registry=r,
        )
        self.ingress_batch_messages = Histogram(
            "gateway_ingress_batch_messages",
            "Messages processed per pipeline batch",
            buckets=(1, 4, 16, 64, 256, 1024, 4096, 16384),
            registry=r,
        )
        self.ingress_paused = Counter(
            "gateway_ingress_backpressure_total",
            "Times reading from the broker was paused because the pipeline was full",
            registry=r,
        )
        # The overload as it stands now, not only how often it began: the queue's depth (read
        # at scrape time from the pipeline, nothing on the hot path), whether reading is paused,
        # and for how long it was (README "Backpressure").
        self.ingress_queued = Gauge(
            "gateway_ingress_queued_messages",
            "Messages read from the broker and not acknowledged yet: queued, in the batch being "
            "processed, or applied and waiting for their commit (bounded: ingress_queue_messages, "
            "a batch, a socket read or two, and at most 4,000 waiting for a group commit)",
            registry=r,
        )
        self.ingress_reading_paused = Gauge(
            "gateway_ingress_paused",
            "1 while reading from the broker is paused (the pipeline is full, or a batch waits "
            "for the database), else 0",
            registry=r,
        )
        self.ingress_paused_seconds = Counter(
            "gateway_ingress_paused_seconds_total",
            "Seconds reading from the broker was paused, counted when reading resumes",
            registry=r,
        )
        self.store_commit_seconds = Histogram(
            "gateway_store_commit_seconds",
            "Time to commit one batch of state changes and events",
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
            registry=r,
        )
        # A database outage (gateway/store/availability.py; the pipeline's retries).
        self.store_commit_retries = Counter(
            "gateway_store_commit_retries_total",
            "Ingest batch commits that failed and are retried (the batch stays unacknowledged),"
            " by the step that failed (entitlements: the ledger, store: the vehicle store)",
            ["step"],
            registry=r,
        )
        # Several gateways on one store (gateway/pipeline/pipeline.py `_apply_durably`, durable.py `refresh`).
        self.store_conflicts = Counter(
            "gateway_store_conflicts_total",
            "Ingest batch commits refused because another gateway had written one of their cars"
            " meanwhile; the batch is applied again on the stored state (store_url only)",
            registry=r,
        )
        self.vehicles_refreshed = Counter(
            "gateway_vehicles_refreshed_total",
            "Vehicle sessions replaced before a batch by the stored ones another gateway had"
            " written (store_url only)",
            registry=r,
        )
        self.store_up = Gauge(
            "gateway_store_up", "1 while the database component (store, ledger) takes writes",
            ["component"], registry=r,
        )
        self.store_statement_timeouts = Counter(
            "gateway_store_statement_timeouts_total",
            "PostgreSQL statements cut off after store_command_timeout_s (database: store, ledger, leases)",
            ["database"],
            registry=r,
        )
        self.store_probe_failures = Counter(
            "gateway_store_probe_failures_total",
            "Availability probes of a database component (store, ledger) that failed",
            ["component"],
            registry=r,
        )
        self.events_written = Counter(
            "gateway_vehicle_events_total", "Vehicle events written to the event log", ["kind"],
            registry=r,
        )
        self.telemetry_records = Counter(
            "gateway_telemetry_records_total",
            "Telemetry samples by outcome (forwarded, no_subscriber)",
            ["outcome"],
            registry=r,
        )
        self.telemetry_sink_failures = Counter(
            "gateway_telemetry_sink_failures_total",
            "Telemetry batches the durable sink (JetStream) did not confirm, retried unacknowledged,"
            " by reason (timeout, no_stream, disconnected, error)",
            ["reason"],
            registry=r,
        )
        self.telemetry_sink_up = Gauge(
            "gateway_telemetry_sink_up",
            "1 while the durable telemetry sink (JetStream) takes records, 0 while it fails",
            registry=r,
        )
        self.grpc_requests = Counter(
            "gateway_grpc_requests_total", "gRPC requests by method and status code",
            ["method", "code"], registry=r,
        )
        self.grpc_server_handling_seconds = Histogram(
            "gateway_grpc_server_handling_seconds",
            "Time to answer a unary gRPC call, by method and status code (gateway/api/observe.py)",
            ["method", "code"],
            # From a read answered from memory (1 ms) to a database write under load (seconds).
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
            registry=r,
        )
        self.grpc_stream_subscribers = Gauge(
            "gateway_grpc_stream_subscribers", "Open gRPC server streams", ["stream"], registry=r
        )
        self.rule_decisions = Counter(
            "gateway_rule_decisions_total",
            "Rule decisions applied to traffic, by rule id and outcome",
            ["rule", "outcome"],
            registry=r,
        )
        self.privacy_withheld_records = Counter(
            "gateway_privacy_withheld_records_total",
            "Records whose location or personal fields were withheld by privacy mode (R22)",
            registry=r,
        )
        self.privacy_withheld_signals = Counter(
            "gateway_privacy_withheld_signals_total",
            "Telemetry signals withheld by privacy mode: not declared public for their service (R22)",
            registry=r,
        )
        self.bulk_deferrals = Counter(
            "gateway_bulk_deferrals_total",
            "Bulk transfers (e.g. FoD software activation) deferred on a paid bearer abroad (R20, R21)",
            registry=r,
        )
        self.presence_grace_started = Counter(
            "gateway_presence_grace_total",
            "Lost connections given a grace period before offline (R20: 2G call gaps), by outcome",
            ["outcome"],  # started, reconnected, expired
            registry=r,
        )
        self.presence_timeouts = Counter(
            "gateway_presence_timeouts_total",
            "Online vehicles reported offline because they sent nothing within their liveness"
            " timeout (3 heartbeat intervals plus the R20 presence grace)",
            registry=r,
        )
        self.reference_reloads = Counter(
            "gateway_reference_reloads_total",
            "Reloads of sim_profiles/ and roaming/ data, by result",
            ["result"],
            registry=r,
        )
        # -- R7 security codes (gateway/security/) --
        self.security_code_checks = Counter(
            "gateway_security_code_checks_total",
            "R7 security code checks (remote commands and code changes), by result: ok, wrong,"
            " locked, missing (required but not given), not_set (the owner has no code)",
            ["result"],
            registry=r,
        )
        self.security_code_changes = Counter(
            "gateway_security_code_changes_total",
            "R7 security codes set (first code), changed or reset, by action",
            ["action"],
            registry=r,
        )
        for result in SECURITY_CODE_RESULTS:
            self.security_code_checks.labels(result)
        for action in SECURITY_CODE_CHANGES:
            self.security_code_changes.labels(action)
        # -- backend authentication (gateway/api/auth.py) --
        self.grpc_auth_denied = Counter(
            "gateway_grpc_auth_denied_total",
            "gRPC calls refused at the edge: no or an invalid credential (UNAUTHENTICATED), or a"
            " credential without the method's scope (PERMISSION_DENIED), by reason",
            ["reason"],
            registry=r,
        )
        self.audit_events = Counter(
            "gateway_audit_events_total",
            "Audited gRPC calls (grants, cancellations, revocations, owner changes, account"
            " deletions, remote commands, reloads), by method and status code",
            ["method", "code"],
            registry=r,
        )
        for reason in AUTH_DENIAL_REASONS:
            self.grpc_auth_denied.labels(reason)
        for kind in MESSAGE_KINDS:
            self.messages_received.labels(kind)
        for reason in REJECT_REASONS:
            self.messages_rejected.labels(reason)
        for reason in SINK_FAILURE_REASONS:
            self.telemetry_sink_failures.labels(reason)
        for database in STATEMENT_DATABASES:
            self.store_statement_timeouts.labels(database)
        for bearer in BEARERS:
            self.vehicles_online.labels(bearer)
        for outcome in STALE_OUTCOMES:
            self.messages_stale.labels(outcome)
        # -- entitlements (gateway/entitlements/engine/) --
        self.entitlements = Gauge(
            "gateway_entitlements", "Live (not revoked) entitlements by state", ["state"], registry=r
        )
        self.fod_waiting = Gauge(
            "gateway_fod_waiting",
            "FoD entitlements of this gateway's cars waiting for an R17 window, by the first"
            " precondition not met (blocker); updated every engine tick",
            ["blocker"],
            registry=r,
        )
        self.entitlement_delivery_seconds = Histogram(
            "gateway_entitlement_delivery_seconds",
            "Services: boot while online -> entitlement set published to the car (R13)",
            buckets=(0.01, 0.05, 0.1, 0.5, 1, 5, 15, 60, 300, 1800),
            registry=r,
        )
        self.entitlement_delivery_backlog = Gauge(
            "gateway_entitlement_delivery_backlog_seconds",
            "Age of the oldest boot while online whose entitlement set has not been published to"
            " the still-online car (R13); 0 when none waits; updated every engine tick",
            registry=r,
        )
        self.fod_unlock_seconds = Histogram(
            "gateway_fod_unlock_seconds",
            "FoD: R17 window eligible -> unlock confirmed by the car (R14, R17)",
            buckets=(1, 5, 15, 60, 300, 900, 3600, 6 * 3600, 24 * 3600),
            registry=r,
        )
        self.entitlement_retries = Counter(
            "gateway_entitlement_retries_total",
            "FoD commands sent again after a failure (R18), by action (unlock, cancel)",
            ["action"],
            registry=r,
        )
        self.entitlement_conflicts = Counter(
            "gateway_entitlement_conflicts_total",
            "Entitlement writes refused because another gateway changed them first (read again, retried)",
            registry=r,
        )
        self.entitlements_followed = Counter(
            "gateway_entitlements_followed_total",
            "Entitlements read again because another gateway sharing the database changed them",
            registry=r,
        )
        self.entitlement_billable = Counter(
            "gateway_entitlement_billable_total", "BILLABLE events written to the outbox (R14)", registry=r
        )
        self.entitlement_events = Counter(
            "gateway_entitlement_events_total", "Entitlement events written to the outbox, by kind",
            ["kind"], registry=r,
        )
        self.entitlement_downlinks = Counter(
            "gateway_entitlement_downlinks_total",
            "Downlinks published by the entitlement engine, by kind (set, fod_command) and outcome",
            ["kind", "outcome"],
            registry=r,
        )
        self.entitlement_ack_timeouts = Counter(
            "gateway_entitlement_ack_timeouts_total",
            "Entitlement sets the car did not ack within the ack timeout (resent on the next boot)",
            registry=r,
        )
        # -- several gateways on one PostgreSQL database: commit wake-ups (gateway/store/pg_notify.py) --
        self.store_notify_connected = Gauge(
            "gateway_store_notify_connected",
            "1 while the LISTEN connection for commits of other gateways is up (store_url only)",
            registry=r,
        )
        self.store_notify_reconnects = Counter(
            "gateway_store_notify_reconnects_total",
            "LISTEN connections re-established after the previous one was lost",
            registry=r,
        )
        self.store_notifications = Counter(
            "gateway_store_notifications_total",
            "Commit notifications received, by outbox (vehicle_events, entitlement_events) and"
            " outcome (ok, bad_payload)",
            ["outbox", "outcome"],
            registry=r,
        )
        self._initialise_known_labels()

    def _initialise_known_labels(self) -> None:
        """A series for every known label value from the start (module constants above); gRPC
        methods are initialised by gateway/api/observe.py, audited ones by gateway/api/auth.py."""
        for component in STORE_COMPONENTS:
            # 0 (not known to take writes) until the availability monitor's first word, which
            # comes before /metrics is served (gateway/store/availability.py).
            self.store_up.labels(component)
            self.store_probe_failures.labels(component)
        for step in COMMIT_STEPS:
            self.store_commit_retries.labels(step)
        for kind in VEHICLE_EVENT_KINDS:
            self.events_written.labels(kind)
        for outcome in TELEMETRY_OUTCOMES:
            self.telemetry_records.labels(outcome)
        for rule, outcome in PIPELINE_RULE_DECISIONS:
            self.rule_decisions.labels(rule, outcome)
        for outcome in GRACE_OUTCOMES:
            self.presence_grace_started.labels(outcome)
        for result in RELOAD_RESULTS:
            self.reference_reloads.labels(result)
        for state in ENTITLEMENT_STATES:
            self.entitlements.labels(state)
        for action in FOD_ACTIONS:
            self.entitlement_retries.labels(action)
        for blocker in FOD_BLOCKERS:
            self.fod_waiting.labels(blocker)
        for kind in ENTITLEMENT_EVENT_KINDS:
            self.entitlement_events.labels(kind)
        for kind in DOWNLINK_KINDS:
            for outcome in DOWNLINK_OUTCOMES:
                self.entitlement_downlinks.labels(kind, outcome)
        for outbox in OUTBOXES:
            for outcome in NOTIFICATION_OUTCOMES:
                self.store_notifications.labels(outbox, outcome)
