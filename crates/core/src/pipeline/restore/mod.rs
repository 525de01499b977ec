//! Streaming a backup out of storage: into nothing (a check), into a scratch database (verify) or
//! into a target database (`pgvigil restore`). One path serves all three.
//!
//! A restore is all or nothing: psql works inside pgvigil's own transaction
//! ([`crate::infra::pg::psql::PsqlTransaction`]), the dump's own transaction lines are removed,
//! and `COMMIT` is sent only after the whole object was read and proven intact
//! ([`integrity::integrity_problems`]). Anything else — damage, a storage error, shutdown,
//! pgvigil dying — ends with nothing committed.

pub mod deep;
pub mod integrity;
pub mod judge;
pub mod stream;

pub use deep::deep;
pub use integrity::{integrity_problems, key_fault, StreamReport};
pub use judge::{judge, EnvironmentFault, Judgement};
pub use stream::{digest, stream, Progress, StreamError};

use crate::infra::pg::psql::{Outcome, PsqlTransaction};
use crate::infra::pg::{PgError, Tool};
use crate::infra::secret::DbUrl;
use crate::infra::storage::{Key, Storage};
use crate::pipeline::stages::dumpscan::Strip;
use crate::records::manifest::Manifest;
use stream::Fed;
use tokio_util::sync::CancellationToken;

/// Why a restore could not be attempted or finished (not a verdict on the backup).
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
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
    let report = match stream::feed(storage, key, &target.identities.0, Some((&mut tx, target.strip)), progress, cancel).await {
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
            if let Outcome::Unknown(f) = tx.rollback().await {
                return Ok(Attempt {
                    report: StreamReport::default(),
                    problems: Vec::new(),
                    outcome: Outcome::Unknown(f),
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
        tx.commit(cancel).await
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
