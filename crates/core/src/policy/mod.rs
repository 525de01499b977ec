//! Pure policies: the decisions pgvigil makes, as functions of records and the clock. Retention
//! ([`retention`], with its calendar rules in [`calendar`]), size anomalies ([`anomaly`]), the schedule ([`schedule`]), the status verdict
//! ([`status`]) and the weekly report's figures ([`report`]).
//!
//! No I/O: nothing here may import `infra`, tokio, sqlx or the AWS SDK. Every rule has a
//! table-driven test.

pub mod anomaly;
pub mod calendar;
#[cfg(test)]
mod fixtures;
pub mod report;
pub mod retention;
pub mod schedule;
pub mod status;
