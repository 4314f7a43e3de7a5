-- A version per vehicle row, bumped by every write: a snapshot is written only over the version
-- its writer last read or wrote (gateway/store/sqlite.py), never over a newer one.
ALTER TABLE vehicles ADD COLUMN version INTEGER NOT NULL DEFAULT 0;
