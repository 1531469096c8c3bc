-- V2__runstart_metadata: the index in PostgreSQL, the same change as index/V2__runstart_metadata.sql (rendered by
-- beamdb from the SQLite migrations: src/index/pg_schema.rs).

ALTER TABLE "runs_index" ADD COLUMN "metadata" JSONB;
