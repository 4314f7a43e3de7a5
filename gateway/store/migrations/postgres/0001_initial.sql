-- One PostgreSQL database holds what the embedded deployment keeps in two SQLite files: the
-- vehicle store (gateway.db) and the ledger with the R7 security codes (entitlements.db).
-- Unsigned 64-bit values (connection ids, replay windows) are numeric(20, 0): bigint is signed.

-- The vehicle store ------------------------------------------------------------------------
CREATE TABLE vehicles (
    vin text PRIMARY KEY,
    snapshot bytea NOT NULL,                 -- telematics.v1.Vehicle
    connection_id numeric(20, 0) NOT NULL,
    seen_window numeric(20, 0) NOT NULL,     -- the replay window of gateway/session/sequence.py
    -- The sequence space the current epoch replaced (0, 0, 0: none).
    previous_epoch numeric(20, 0) NOT NULL,
    previous_last_sequence numeric(20, 0) NOT NULL,
    previous_seen_window numeric(20, 0) NOT NULL
);
-- Cursors are handed out in commit order (gateway/store/pg_outbox.py); never reused.
CREATE TABLE vehicle_events (
    cursor bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    vin text NOT NULL,
    kind text NOT NULL,
    payload bytea NOT NULL                   -- telematics.v1.VehicleEvent without cursor
);
CREATE INDEX vehicle_events_vin ON vehicle_events (vin, cursor);
CREATE TABLE event_dedupe (
    vin text NOT NULL,
    key text NOT NULL,
    PRIMARY KEY (vin, key)
);

-- The ledger -------------------------------------------------------------------------------
CREATE TABLE entitlements (
    entitlement_id text PRIMARY KEY,
    seq bigint GENERATED ALWAYS AS IDENTITY UNIQUE,  -- insertion order (SQLite's rowid)
    order_id text NOT NULL UNIQUE,           -- idempotency key of grants
    vin text NOT NULL,                       -- never changes (R8)
    state text NOT NULL,
    updated_at double precision NOT NULL,
    data text NOT NULL                       -- the whole Entitlement as JSON, order included
);
CREATE INDEX entitlements_vin ON entitlements (vin, seq);
CREATE INDEX entitlements_state ON entitlements (state);
CREATE TABLE entitlement_history (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    entitlement_id text NOT NULL,
    at double precision NOT NULL,
    from_state text,                         -- NULL: created
    to_state text NOT NULL
);
CREATE INDEX entitlement_history_id ON entitlement_history (entitlement_id, id);
CREATE TABLE entitlement_events (
    cursor bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,  -- commit order, like vehicle_events
    vin text NOT NULL,
    entitlement_id text NOT NULL,
    kind text NOT NULL,
    payload bytea NOT NULL                   -- telematics.v1.EntitlementEvent without cursor
);
CREATE INDEX entitlement_events_vin ON entitlement_events (vin, cursor);
CREATE TABLE vehicle_owners (
    vin text PRIMARY KEY,
    account text NOT NULL                    -- the primary user (R3)
);
CREATE INDEX vehicle_owners_account ON vehicle_owners (account);
CREATE TABLE deleted_accounts (
    account text PRIMARY KEY,
    deleted_at double precision NOT NULL,
    vins text[] NOT NULL                     -- the vehicles unlinked by the deletion (R4)
);
CREATE TABLE entitlement_sets (
    vin text NOT NULL,
    version integer NOT NULL,
    entitlement_ids text[] NOT NULL,
    recorded_at double precision NOT NULL,
    published_at double precision,
    acked_at double precision,
    PRIMARY KEY (vin, version)
);
CREATE TABLE fod_commands (
    command_id text PRIMARY KEY,
    seq bigint GENERATED ALWAYS AS IDENTITY UNIQUE,  -- sending order (SQLite's rowid)
    entitlement_id text NOT NULL,
    vin text NOT NULL,
    action text NOT NULL,
    sent_at double precision NOT NULL,
    eligible_at double precision,
    result_at double precision,
    success boolean
);
CREATE INDEX fod_commands_entitlement ON fod_commands (entitlement_id, seq);
CREATE TABLE security_codes (
    account text PRIMARY KEY,                -- the account id (e-mail address, R1)
    code_hash text,                          -- scrypt$n$r$p$salt$key; NULL: none set (R7)
    failures integer NOT NULL DEFAULT 0,     -- wrong codes in a row
    locked_until double precision NOT NULL DEFAULT 0,  -- unix seconds; 0: not locked
    updated_at double precision NOT NULL
);
