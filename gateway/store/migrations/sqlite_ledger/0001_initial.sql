-- The ledger (data_dir/entitlements.db): entitlements, their outbox, owners, sets, FoD commands
-- and the R7 security codes beside the accounts. IF NOT EXISTS: a database made before
-- migrations (by this same schema) is adopted as version 1 with its data.
CREATE TABLE IF NOT EXISTS entitlements (
    entitlement_id TEXT PRIMARY KEY,
    order_id TEXT NOT NULL UNIQUE,        -- idempotency key of grants
    vin TEXT NOT NULL,                    -- never changes (R8)
    state TEXT NOT NULL,
    updated_at REAL NOT NULL,
    data TEXT NOT NULL                    -- the whole Entitlement as JSON, order included
);
CREATE INDEX IF NOT EXISTS entitlements_vin ON entitlements (vin);
CREATE INDEX IF NOT EXISTS entitlements_state ON entitlements (state);
CREATE TABLE IF NOT EXISTS entitlement_history (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    entitlement_id TEXT NOT NULL,
    at REAL NOT NULL,
    from_state TEXT,                      -- NULL: created
    to_state TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS entitlement_history_id ON entitlement_history (entitlement_id, id);
CREATE TABLE IF NOT EXISTS entitlement_events (
    cursor INTEGER PRIMARY KEY AUTOINCREMENT,
    vin TEXT NOT NULL,
    entitlement_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    payload BLOB NOT NULL                 -- telematics.v1.EntitlementEvent without cursor
);
CREATE INDEX IF NOT EXISTS entitlement_events_vin ON entitlement_events (vin, cursor);
CREATE TABLE IF NOT EXISTS vehicle_owners (
    vin TEXT PRIMARY KEY,
    account TEXT NOT NULL                 -- the primary user (R3)
);
CREATE INDEX IF NOT EXISTS vehicle_owners_account ON vehicle_owners (account);
CREATE TABLE IF NOT EXISTS deleted_accounts (
    account TEXT PRIMARY KEY,
    deleted_at REAL NOT NULL,
    vins TEXT NOT NULL                    -- JSON list: the vehicles unlinked by the deletion (R4)
);
CREATE TABLE IF NOT EXISTS entitlement_sets (
    vin TEXT NOT NULL,
    version INTEGER NOT NULL,
    entitlement_ids TEXT NOT NULL,        -- JSON list
    recorded_at REAL NOT NULL,
    published_at REAL,
    acked_at REAL,
    PRIMARY KEY (vin, version)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS fod_commands (
    command_id TEXT PRIMARY KEY,
    entitlement_id TEXT NOT NULL,
    vin TEXT NOT NULL,
    action TEXT NOT NULL,
    sent_at REAL NOT NULL,
    eligible_at REAL,
    result_at REAL,
    success INTEGER
);
CREATE INDEX IF NOT EXISTS fod_commands_entitlement ON fod_commands (entitlement_id);
CREATE TABLE IF NOT EXISTS security_codes (
    account TEXT PRIMARY KEY,             -- the account id (e-mail address, R1)
    code_hash TEXT,                       -- scrypt$n$r$p$salt$key; NULL: none set (R7)
    failures INTEGER NOT NULL DEFAULT 0,  -- wrong codes in a row
    locked_until REAL NOT NULL DEFAULT 0, -- unix seconds; 0: not locked
    updated_at REAL NOT NULL
);
