//! Integration tests: the real binary, real SQLite files, a temp dir, a cleared environment.
//! Named `<command>_<behaviour>`.

mod bad_input;
mod common;
mod concurrency;
mod crash;
mod foundation;
mod generate;
mod hdf5;
mod ingest;
mod migrations;
mod models;
mod reindex;
mod search;
mod verify;
