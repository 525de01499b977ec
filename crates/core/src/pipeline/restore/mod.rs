//! Streaming a backup out of storage: into nothing (a check), into a scratch database (verify) or
//! into a target database (`pgvigil restore`). One path serves all three.
//!
//! A restore is all or nothing: psql works inside pgvigil's own transaction
//! ([`crate::infra::pg::psql::PsqlTransaction`]), restricted so that no psql command of the
//! backup can run; every statement passes the gate (PostgreSQL's parser and an allowlist of what
//! pg_dump writes, [`crate::pipeline::stages::dumpscan::gate`]) before psql sees it; and
//! `COMMIT` is sent only after the whole object was read and proven intact
//! ([`integrity::integrity_problems`]). Anything else — damage, a refused statement, a storage
//! error, shutdown, pgvigil dying — ends with nothing committed.

pub mod deep;
pub mod integrity;
pub mod judge;
mod members;
pub mod parallel;
pub mod stream;
pub mod table;
pub mod toc;

pub use deep::deep;
pub use integrity::{integrity_problems, key_fault, StreamReport};
pub use judge::{judge, EnvironmentFault, Judgement};
pub use stream::{digest, stream, Progress, StreamError};

use crate::infra::pg::psql::{Outcome, PsqlTransaction};
use crate::infra::pg::{PgError, Tool};
use crate::infra::secret::DbUrl;
use crate::infra::storage::{Key, Storage};
use crate::pipeline::stages::dumpscan::{GateRules, KnownRoles, Strip};
use crate::records::manifest::Manifest;
use stream::Fed;
use tokio_util::sync::CancellationToken;

/// Why a restore could not be attempted or finished (not a verdict on the backup, except
/// [`RestoreError::TimedOut`], which the caller judges).
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    /// The deadline passed: psql and its server process were stopped and nothing was committed.
    #[error("the restore did not finish within {} s; it was stopped and nothing was committed", .0.as_secs())]
    TimedOut(std::time::Duration),
    /// Reading the object failed, or shutdown interrupted: nothing was committed.
    #[error(transparent)]
    Stream(#[from] StreamError),
    /// psql could not be started.
    #[error(transparent)]
    Pg(#[from] PgError),
}

/// One restore attempt.
#[derive(Debug)]
pub struct Attempt {
    /// What the stream showed.
    pub report: StreamReport,
    /// Why the object is not what the backup wrote (empty when intact).
    pub problems: Vec<String>,
    /// What the server did with the transaction.
    pub outcome: Outcome,
}

/// Where a restore goes.
#[derive(Debug, Clone, Copy)]
pub struct Target<'a> {
    /// The psql to restore with.
    pub psql: &'a Tool,
    /// The database.
    pub url: &'a DbUrl,
    /// SQL sent first, inside the same transaction (e.g. the statements of `--clean`).
    pub preamble: &'a str,
    /// Ownership and privilege statements left out (roles the target lacks and may not create).
    pub strip: Strip,
    /// `BACKUP_ENCRYPTION_IDENTITY_FILE`: what opens an encrypted backup.
    pub identities: &'a crate::infra::config::Identities,
    /// The most the restore may take (`VERIFY_TIMEOUT`, or derived: [`default_deadline`]).
    pub deadline: Option<std::time::Duration>,
}

/// Without `VERIFY_TIMEOUT`, a restore may take this many times the longest restore (with its
/// checks) that the recent verification records show…
pub const DEADLINE_FACTOR: f64 = 4.0;
/// …and never less than this.
pub const DEADLINE_FLOOR: std::time::Duration = std::time::Duration::from_secs(3600);

/// …and never more than this (records in the bucket are untrusted: one cannot stretch it far).
pub const DEADLINE_CEILING: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

/// The deadline of a restore when `VERIFY_TIMEOUT` is not set, from the restore times of recent
/// verifications that passed (see [`DEADLINE_FACTOR`]): between [`DEADLINE_FLOOR`] and
/// [`DEADLINE_CEILING`].
pub fn default_deadline(recorded_secs: &[f64]) -> std::time::Duration {
    let longest = recorded_secs
        .iter()
        .copied()
        .filter(|s| s.is_finite() && *s > 0.0)
        .fold(0.0, f64::max);
    std::time::Duration::from_secs_f64((longest * DEADLINE_FACTOR).min(1e9)).clamp(DEADLINE_FLOOR, DEADLINE_CEILING)
}

/// `fut`, unless `deadline` passes first (`None`).
pub(crate) async fn before<T>(deadline: Option<tokio::time::Instant>, fut: impl std::future::Future<Output = T>) -> Option<T> {
    match deadline {
        Some(at) => tokio::time::timeout_at(at, fut).await.ok(),
        None => Some(fut.await),
    }
}

/// What the gate lets through for a backup with manifest `m`: the roles the manifest names may
/// be switched to with `SET ROLE` / `SET SESSION AUTHORIZATION`.
pub fn gate_rules(m: Option<&Manifest>, strip: Strip) -> GateRules {
    let roles = m
        .and_then(|m| m.privileges.as_ref())
        .map(crate::pipeline::verify::needed_roles)
        .unwrap_or_default();
    GateRules {
        strip,
        roles: KnownRoles(roles),
    }
}

/// Streams `key` into the target with psql inside one transaction, and commits only if the
/// object is intact.
///
/// # Errors
/// [`RestoreError`] when storage, shutdown or psql's start prevented an answer; the target was
/// left as it was.
pub async fn restore_into(
    storage: &dyn Storage,
    key: &Key,
    manifest: Option<&Manifest>,
    target: &Target<'_>,
    progress: Option<Progress>,
    cancel: &CancellationToken,
) -> Result<Attempt, RestoreError> {
    let mut tx = PsqlTransaction::begin(target.psql, target.url, target.preamble).await?;
    let deadline = target.deadline.map(|d| tokio::time::Instant::now() + d);
    // Past the deadline psql and its server process are stopped, and the server says what
    // became of the transaction (committed only if pgvigil's own COMMIT went through in time).
    let timed_out = |tx: PsqlTransaction, report: StreamReport| async move {
        let mut tx = tx;
        match tx.rollback().await {
            Outcome::RolledBack(_) | Outcome::NotStarted(_) => Err(RestoreError::TimedOut(target.deadline.unwrap_or_default())),
            outcome => Ok(Attempt {
                report,
                problems: Vec::new(),
                outcome,
            }),
        }
    };
    let rules = gate_rules(manifest, target.strip);
    let fed = before(
        deadline,
        stream::feed(storage, key, &target.identities.0, Some((&mut tx, rules)), progress, cancel),
    )
    .await;
    let Some(fed) = fed else {
        return timed_out(tx, StreamReport::default()).await;
    };
    let report = match fed {
        Ok(Fed::Read(r)) => *r,
        Ok(Fed::Stopped(outcome)) => {
            // psql already ended (and with it the transaction); the object was not read to its
            // end, so nothing is known about it.
            return Ok(Attempt {
                report: StreamReport::default(),
                problems: Vec::new(),
                outcome,
            });
        }
        Err(e) => {
            // The server is asked what became of the transaction: should the dump have ended it
            // early, saying "left as it was" would be untrue.
            let outcome = tx.rollback().await;
            if matches!(outcome, Outcome::Unknown(_) | Outcome::EndedEarly(_) | Outcome::Committed) {
                return Ok(Attempt {
                    report: StreamReport::default(),
                    problems: Vec::new(),
                    outcome,
                });
            }
            return Err(e.into());
        }
    };
    if let Some(why) = integrity::key_fault(manifest, &report) {
        // Intact, but not ours to open: the environment's fault. Nothing was sent to psql.
        tx.rollback().await;
        return Err(StreamError::Key(why).into());
    }
    let problems = integrity_problems(manifest, &report);
    let outcome = if problems.is_empty() {
        let guard = manifest.and_then(|m| toc::guard_sql(&m.toc));
        match before(deadline, tx.commit(guard.as_deref(), cancel)).await {
            Some(outcome) => outcome,
            None => return timed_out(tx, report).await,
        }
    } else {
        // Never let psql commit a damaged dump: it is killed before its input ends.
        tx.rollback().await
    };
    if cancel.is_cancelled() && matches!(outcome, Outcome::RolledBack(_) | Outcome::NotStarted(_)) {
        // Shutdown stopped it; that is neither the backup's fault nor the server's.
        return Err(StreamError::Cancelled.into());
    }
    Ok(Attempt { report, problems, outcome })
}
