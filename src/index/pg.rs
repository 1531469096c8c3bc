//! The index in PostgreSQL (feature `postgres`).
