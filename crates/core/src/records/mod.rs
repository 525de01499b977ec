//! The records: what pgvigil writes about backups and how it names things. Object names
//! ([`keys`]), per-backup manifests ([`manifest`]), verification and failure records
//! ([`history`]), the services' recorded settings ([`policy`]) and the read-only view of all of
//! them ([`catalog`]).
//!
//! Records read and write through [`crate::infra::storage`]; they know nothing of PostgreSQL and
//! never import `pipeline` or `operator`.

pub mod catalog;
pub mod databases;
pub mod history;
pub mod holds;
pub mod keys;
pub mod lenient;
pub mod manifest;
pub mod policy;
pub mod timeline;
