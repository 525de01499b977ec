//! The service machinery shared by both daemons: the [`skeleton`] every service runs through,
//! the [`jobs`] it drives, the [`runner`] loop with its [`retry`] helper, the [`health`]
//! endpoint and the status [`page`] it serves; [`binary`] is every service binary's `main`. (Process setup — allocator, logging, signals — is in [`crate::infra::process`].)
//!
//! The service layer wires pipelines to schedules; it never imports `operator`.

pub mod binary;
mod databases;
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
