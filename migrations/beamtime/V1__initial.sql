-- V1__initial: beamtime database, written by `beamdb make-migrations`
--
--   create table beamtime_meta
--   create table events
--   create unique index events_stream_seq on events (stream_uid, seq_num)
--   create table image_refs
--   create index image_refs_event on image_refs (event_uid)
--   create unique index image_refs_frame on image_refs (zarr_group, index_in_stack)
--   create index image_refs_stream_seq on image_refs (stream_uid, seq_num)
--   create table runs
--   create index runs_plan_name on runs (plan_name)
--   create index runs_researcher on runs (researcher)
--   create index runs_sample on runs (sample_id)
--   create index runs_time_start on runs (time_start)
--   create table samples
--   create unique index samples_name on samples (name)
--   create table streams
--   create index streams_run_name on streams (run_uid, name)

CREATE TABLE "beamtime_meta" (
    "key" TEXT NOT NULL PRIMARY KEY,
    "value" TEXT NOT NULL
);
CREATE TABLE "events" (
    "uid" TEXT NOT NULL PRIMARY KEY,
    "stream_uid" TEXT NOT NULL REFERENCES "streams" ("uid") ON DELETE CASCADE,
    "seq_num" INTEGER NOT NULL,
    "time" REAL NOT NULL,
    "data" TEXT NOT NULL,
    "timestamps" TEXT
);
CREATE UNIQUE INDEX "events_stream_seq" ON "events" ("stream_uid", "seq_num");
CREATE TABLE "image_refs" (
    "id" INTEGER PRIMARY KEY,
    "event_uid" TEXT REFERENCES "events" ("uid") ON DELETE CASCADE,
    "stream_uid" TEXT NOT NULL REFERENCES "streams" ("uid") ON DELETE CASCADE,
    "seq_num" INTEGER NOT NULL,
    "field_name" TEXT NOT NULL,
    "zarr_group" TEXT NOT NULL,
    "index_in_stack" INTEGER NOT NULL,
    "shape_x" INTEGER,
    "shape_y" INTEGER,
    "frame_shape" TEXT,
    "dtype" TEXT NOT NULL,
    "compression_codec" TEXT
);
CREATE INDEX "image_refs_event" ON "image_refs" ("event_uid");
CREATE UNIQUE INDEX "image_refs_frame" ON "image_refs" ("zarr_group", "index_in_stack");
CREATE INDEX "image_refs_stream_seq" ON "image_refs" ("stream_uid", "seq_num");
CREATE TABLE "runs" (
    "uid" TEXT NOT NULL PRIMARY KEY,
    "sample_id" INTEGER REFERENCES "samples" ("id") ON DELETE SET NULL,
    "scan_id" INTEGER,
    "plan_name" TEXT NOT NULL,
    "time_start" REAL NOT NULL,
    "time_stop" REAL,
    "exit_status" TEXT,
    "num_events" INTEGER NOT NULL DEFAULT (0),
    "operator" TEXT,
    "researcher" TEXT,
    "metadata" TEXT NOT NULL,
    "stop_metadata" TEXT,
    "content_digest" TEXT
);
CREATE INDEX "runs_plan_name" ON "runs" ("plan_name");
CREATE INDEX "runs_researcher" ON "runs" ("researcher");
CREATE INDEX "runs_sample" ON "runs" ("sample_id");
CREATE INDEX "runs_time_start" ON "runs" ("time_start");
CREATE TABLE "samples" (
    "id" INTEGER PRIMARY KEY,
    "name" TEXT NOT NULL,
    "formula" TEXT,
    "serial" TEXT,
    "tags" TEXT,
    "beamline_pos" TEXT,
    "extra" TEXT
);
CREATE UNIQUE INDEX "samples_name" ON "samples" ("name");
CREATE TABLE "streams" (
    "uid" TEXT NOT NULL PRIMARY KEY,
    "run_uid" TEXT NOT NULL REFERENCES "runs" ("uid") ON DELETE CASCADE,
    "name" TEXT NOT NULL,
    "data_keys" TEXT NOT NULL,
    "time_created" REAL NOT NULL,
    "configuration" TEXT
);
CREATE INDEX "streams_run_name" ON "streams" ("run_uid", "name");
