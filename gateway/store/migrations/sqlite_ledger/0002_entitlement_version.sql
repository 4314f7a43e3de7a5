-- A version per entitlement, bumped by every write: an update names the version it replaces
-- (UPDATE ... WHERE version = old) and fails with VersionConflict when another writer came first.
ALTER TABLE entitlements ADD COLUMN version INTEGER NOT NULL DEFAULT 0;
