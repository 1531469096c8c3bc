-- V2__runstart_metadata: index database, written by `beamdb make-migrations`
--
--   add column runs_index.metadata TEXT NULL

ALTER TABLE "runs_index" ADD COLUMN "metadata" TEXT;
