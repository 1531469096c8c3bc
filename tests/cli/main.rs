//! Integration tests: the real binary, real SQLite files, a temp dir, a cleared environment.
//! Named `<command>_<behaviour>`.

mod bad_input;
mod campaign2;
mod campaign3;
mod common;
mod concurrency;
mod crash;
mod detectors;
mod export;
#[cfg(all(feature = "postgres", feature = "s3"))]
mod facility;
mod foundation;
mod generate;
mod hdf5;
mod hostile;
mod ingest;
mod listen;
mod migrations;
mod models;
mod mutation;
#[cfg(feature = "postgres")]
mod pg_server;
mod postgres;
mod reading;
mod reindex;
#[cfg(feature = "s3")]
mod s3;
mod s3_settings;
mod scale;
mod search;
mod setup;
mod show;
mod verify;
