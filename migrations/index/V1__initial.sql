-- V1__initial: index database, written by `beamdb make-migrations`
--
--   create table beamtimes
--   create unique index beamtimes_db_path on beamtimes (db_path)
--   create index beamtimes_researcher on beamtimes (researcher_id)
--   create table researchers
--   create unique index researchers_name on researchers (name)
--   create table runs_index
--   create index runs_index_beamtime on runs_index (beamtime_id)
--   create index runs_index_plan on runs_index (plan_name)
--   create index runs_index_researcher on runs_index (researcher_id)
--   create index runs_index_sample on runs_index (sample_name)
--   create index runs_index_time_start on runs_index (time_start)

CREATE TABLE "beamtimes" (
    "id" TEXT NOT NULL PRIMARY KEY,
    "researcher_id" INTEGER REFERENCES "researchers" ("id") ON DELETE SET NULL,
    "db_path" TEXT NOT NULL,
    "time_start" REAL,
    "time_stop" REAL,
    "num_runs" INTEGER,
    "watermark" TEXT,
    "indexed_at" REAL
);
CREATE UNIQUE INDEX "beamtimes_db_path" ON "beamtimes" ("db_path");
CREATE INDEX "beamtimes_researcher" ON "beamtimes" ("researcher_id");
CREATE TABLE "researchers" (
    "id" INTEGER PRIMARY KEY,
    "name" TEXT NOT NULL,
    "email" TEXT,
    "orcid" TEXT,
    "affiliation" TEXT
);
CREATE UNIQUE INDEX "researchers_name" ON "researchers" ("name");
CREATE TABLE "runs_index" (
    "uid" TEXT NOT NULL PRIMARY KEY,
    "beamtime_id" TEXT NOT NULL REFERENCES "beamtimes" ("id") ON DELETE CASCADE,
    "researcher_id" INTEGER REFERENCES "researchers" ("id") ON DELETE SET NULL,
    "sample_name" TEXT,
    "plan_name" TEXT,
    "scan_id" INTEGER,
    "time_start" REAL,
    "time_stop" REAL,
    "exit_status" TEXT,
    "num_events" INTEGER
);
CREATE INDEX "runs_index_beamtime" ON "runs_index" ("beamtime_id");
CREATE INDEX "runs_index_plan" ON "runs_index" ("plan_name");
CREATE INDEX "runs_index_researcher" ON "runs_index" ("researcher_id");
CREATE INDEX "runs_index_sample" ON "runs_index" ("sample_name");
CREATE INDEX "runs_index_time_start" ON "runs_index" ("time_start");
