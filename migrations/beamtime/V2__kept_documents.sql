-- V2__kept_documents: beamtime database, written by `beamdb make-migrations`
--
--   create table kept_documents
--   create table kept_events

CREATE TABLE "kept_documents" (
    "run_uid" TEXT NOT NULL REFERENCES "runs" ("uid") ON DELETE CASCADE,
    "position" INTEGER NOT NULL,
    "events_before" INTEGER NOT NULL,
    "kind" TEXT NOT NULL,
    "document" TEXT NOT NULL,
    "event_rest" TEXT,
    PRIMARY KEY ("run_uid", "position")
);
CREATE TABLE "kept_events" (
    "event_uid" TEXT NOT NULL PRIMARY KEY REFERENCES "events" ("uid") ON DELETE CASCADE,
    "rest" TEXT NOT NULL
);
