//! pgvigil core: everything the backup service, the verify service and the operator CLI share.
//!
//! The binaries are thin: they read [`config`], set up [`telemetry`] and a shutdown token, and call
//! [`backup`], [`verify`] or the read-only views in [`catalog`] and [`report`].

pub mod anomaly;
pub mod backup;
pub mod catalog;
pub mod compress;
pub mod config;
pub mod daemon;
pub mod dumpscan;
pub mod health;
pub mod keys;
pub mod manifest;
pub mod memory;
pub mod pg;
pub mod report;

pub mod restore;
pub mod retention;
pub mod runner;
pub mod secret;
pub mod shutdown;
pub mod storage;
pub mod telemetry;
pub mod verify;
