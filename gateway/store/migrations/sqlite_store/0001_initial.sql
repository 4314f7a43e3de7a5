-- The vehicle store (data_dir/gateway.db). IF NOT EXISTS: a database made before migrations
-- (by this same schema) is adopted as version 1 with its data.
CREATE TABLE IF NOT EXISTS vehicles (
    vin TEXT PRIMARY KEY,
    snapshot BLOB NOT NULL,          -- telematics.v1.Vehicle
    connection_id BLOB NOT NULL,     -- 8 bytes, big endian (SQLite integers are signed)
    -- The replay window of gateway/session/sequence.py (8 bytes, big endian), then the
    -- sequence space the current epoch replaced: epoch, last sequence, window (8 bytes each).
    -- Rows written before epochs existed hold the window alone.
    seq_window BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS vehicle_events (
    cursor INTEGER PRIMARY KEY AUTOINCREMENT,
    vin TEXT NOT NULL,
    kind TEXT NOT NULL,
    payload BLOB NOT NULL            -- telematics.v1.VehicleEvent without cursor
);
CREATE INDEX IF NOT EXISTS vehicle_events_vin ON vehicle_events (vin, cursor);
CREATE TABLE IF NOT EXISTS event_dedupe (
    vin TEXT NOT NULL,
    key TEXT NOT NULL,
    PRIMARY KEY (vin, key)
) WITHOUT ROWID;
