//! End-to-end suite: pgvigil against a real PostgreSQL and a real S3-protocol server.

#![allow(clippy::unwrap_used)]

mod anomalies;
mod backup;
mod cli;
mod databases;
mod destinations;
mod docs;
mod encryption;
mod faults;
mod hostile;
mod metrics;
mod notify;
mod objectlock;
mod parts;
mod policy;
mod restore;
mod roles;
mod secrets;
mod statuspage;
mod storage;
mod table;
mod trust;
mod verdicts;
mod verify;
