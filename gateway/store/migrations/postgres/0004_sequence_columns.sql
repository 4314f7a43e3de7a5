-- The sequence written alone (a narrow row update, gateway/store/postgres.py) while nothing
-- else of the snapshot changed: these override the snapshot's last_sequence and last_seen_at.
-- NULL: the snapshot's own (rows written before these columns).
ALTER TABLE vehicles ADD COLUMN last_sequence numeric(20, 0);
ALTER TABLE vehicles ADD COLUMN last_seen_at double precision;  -- unix seconds
