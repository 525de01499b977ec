//! pgvigil's two daemons: the machinery the backup and verify services share, apart from the
//! library (`pgvigil-core`) so that the operator CLI links none of it (no HTTP server, metrics
//! registry or webhook client).
//!
//! The [`skeleton`] every service runs through, the [`jobs`] it drives, the [`runner`] loop with
//! its [`retry`] helper, the [`health`] endpoint and the status [`page`] it serves, its
//! [`notify`] webhooks; [`args`] is what a service binary's command line asks for. (Process
//! setup — allocator, logging, signals — is in [`pgvigil_core::infra::process`].)
//!
//! The service layer wires pipelines to schedules; it never imports `operator`. Errors follow the
//! policy written at the top of `pgvigil-core`.

pub mod args;
mod databases;
pub mod error;
pub mod health;
pub mod http;
pub mod jobs;
pub mod metrics;
pub mod notify;
mod once;
pub mod page;
pub mod retry;
pub mod runner;
pub mod skeleton;

pub use args::{run, ServiceArgs};
