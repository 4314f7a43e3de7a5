-- The sequence written alone (a narrow row update, gateway/store/sqlite.py) while nothing else
-- of the snapshot changed: these override the snapshot's last_sequence and last_seen_at.
-- NULL: the snapshot's own (rows written before these columns).
ALTER TABLE vehicles ADD COLUMN last_sequence BLOB;  -- 8 bytes, big endian
ALTER TABLE vehicles ADD COLUMN last_seen_at REAL;   -- unix seconds
