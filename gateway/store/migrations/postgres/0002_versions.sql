-- Guards against last-writer-wins when several gateways share the database: a version per
-- vehicle row and per entitlement, bumped by every write. A snapshot is written only over the
-- version its writer last read or wrote; an entitlement update names the version it replaces
-- and fails with VersionConflict when another writer came first.
ALTER TABLE vehicles ADD COLUMN version bigint NOT NULL DEFAULT 0;
ALTER TABLE entitlements ADD COLUMN version bigint NOT NULL DEFAULT 0;
