//! Verification: restore a backup from storage into a scratch database and prove it is good.
//!
//! [`choose`] picks the backup, [`run`] restores it (integrity first: SHA-256 and size against the
//! manifest, every gzip member's CRC and length, pg_dump's closing line — nothing is committed
//! otherwise) and drives [`checks`] (row counts, `amcheck`) and the operator's [`queries`]. Scratch
//! databases carry [`SCRATCH_PREFIX`] and are managed by [`crate::infra::pg::scratch`]; nothing else
//! on the verify server is touched.
//!
//! The verdict rule: a returned [`VerificationRecord`] blames the backup; an error
//! ([`VerifyError::CouldNotRun`]) blames the environment and is never recorded as a failed
//! verification.

mod checks;
pub mod choose;
pub mod queries;
mod run;

pub use choose::choose;
pub use queries::split_statements;
pub use run::{cleanup_leftovers, verify_backup};

use crate::infra::config::{Settings, ToolsConfig, VerifyConfig};
use crate::infra::pg::{self, PgError, PsqlFailure};
use crate::infra::secret::DbUrl;
use crate::infra::storage::{DynStorage, StorageError};
use crate::records::catalog::Catalog;
use crate::records::history::{read_verification, write_verification, VerificationRecord};
use crate::records::keys::{BackupId, Layout};
use std::path::PathBuf;
use std::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn, Instrument};

/// Every scratch database pgvigil creates starts with this; it drops only such databases.
pub const SCRATCH_PREFIX: &str = pg::scratch::PREFIX;

/// Everything a verification needs.
#[derive(Debug, Clone)]
pub struct VerifyContext {
    /// Where the backups are.
    pub storage: DynStorage,
    /// Key names.
    pub layout: Layout,
    /// `VERIFY_DATABASE_URL`: the server on which scratch databases are created.
    pub database_url: DbUrl,
    /// Interval, queries, sampling.
    pub cfg: VerifyConfig,
    /// Client tools.
    pub tools: ToolsConfig,
}

impl VerifyContext {
    /// The context for `database_url` (`VERIFY_DATABASE_URL`) and the rest of `settings`.
    pub fn new(settings: &Settings, database_url: DbUrl, storage: DynStorage) -> Self {
        Self {
            storage,
            layout: Layout::new(&settings.storage.prefix),
            database_url,
            cfg: settings.verify.clone(),
            tools: settings.tools.clone(),
        }
    }
}

/// Why a verification could not run: the environment, not the backup. Keeps its source.
#[derive(Debug, thiserror::Error)]
pub enum CouldNotRun {
    /// Storage unavailable, or the download broke.
    #[error(transparent)]
    Storage(StorageError),
    /// The verify server or the client tools.
    #[error(transparent)]
    Pg(PgError),
    /// psql failed for a reason that lies with the verify server, the role or psql itself.
    #[error("{}", environment_message(.0))]
    Psql(PsqlFailure),
    /// The connection broke while the restore was committing, and the server could not be asked.
    #[error("the verify server's answer to the restore's COMMIT was lost: {0}")]
    CommitUnknown(PsqlFailure),
    /// `VERIFY_QUERIES_FILE` cannot be read.
    #[error("cannot read VERIFY_QUERIES_FILE {}: {source}", path.display())]
    QueriesFile {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A check failed because of the verify server, the connection or the role.
    #[error("could not check {what}: {source}")]
    Check {
        /// What was being checked.
        what: String,
        /// Why.
        #[source]
        source: PgError,
    },
    /// The verify server runs an older major version than the source: the dump may not restore there.
    #[error("the verify server runs PostgreSQL {verify}, older than the source server's {source_server}; point VERIFY_DATABASE_URL at a PostgreSQL {source_major} or newer server")]
    VerifyServerTooOld {
        /// The verify server's version.
        verify: String,
        /// The source's version (from the manifest).
        source_server: String,
        /// The source's major version.
        source_major: u32,
    },
    /// The dump needs extensions the verify server does not have.
    #[error("the verify server lacks the extension(s) {} that the dump creates; install them there (e.g. the postgresql-contrib package, or the extension's own package)", names.join(", "))]
    MissingExtensions {
        /// Their names.
        names: Vec<String>,
    },
    /// Another verification holds this scratch database.
    #[error("scratch database {0} is in use by another verifier")]
    ScratchInUse(String),
    /// The scratch database could not be created.
    #[error("could not create scratch database {name} (the role needs CREATEDB): {source}")]
    Scratch {
        /// Its name.
        name: String,
        /// The server's refusal.
        #[source]
        source: PgError,
    },
}

/// A psql failure that blames the environment, with what to do about it.
fn environment_message(f: &PsqlFailure) -> String {
    match (f, f.environment_cause()) {
        (PsqlFailure::Statement { line, .. }, Some(cause)) => {
            format!("the verify server could not restore the dump: {line} ({})", cause.advice())
        }
        _ => f.to_string(),
    }
}

/// A verification that could not run: not a verdict on the backup.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// The environment failed.
    #[error(transparent)]
    CouldNotRun(#[from] CouldNotRun),
    /// Shutdown.
    #[error("interrupted by shutdown")]
    Cancelled,
    /// Nothing to verify yet.
    #[error("there is no complete backup to verify yet")]
    NothingToVerify,
}

impl From<StorageError> for VerifyError {
    fn from(e: StorageError) -> Self {
        match e {
            StorageError::Cancelled => VerifyError::Cancelled,
            other => VerifyError::CouldNotRun(CouldNotRun::Storage(other)),
        }
    }
}

impl From<PgError> for VerifyError {
    fn from(e: PgError) -> Self {
        VerifyError::CouldNotRun(CouldNotRun::Pg(e))
    }
}

/// Name of a run's scratch database: prefix, the backup's timestamp and a random part (two
/// verifiers of the same backup never share one), lower case, safe unquoted.
pub fn scratch_name(id: BackupId, random: u32) -> String {
    format!("{SCRATCH_PREFIX}{}_{random:08x}", id.stamp().to_ascii_lowercase().replace('-', "_"))
}

/// The backups this run should verify (see [`choose`]).
///
/// # Errors
/// Storage errors; [`VerifyError::NothingToVerify`] when there is no complete backup.
pub async fn plan(ctx: &VerifyContext, cancel: &CancellationToken) -> Result<Vec<BackupId>, VerifyError> {
    let cat = Catalog::load(ctx.storage.as_ref(), &ctx.layout, cancel).await?;
    let (roll, pick) = (rand::random::<f64>(), rand::random::<f64>());
    let plan = choose(&cat, ctx.cfg.random_rate, roll, pick);
    if plan.is_empty() {
        return Err(VerifyError::NothingToVerify);
    }
    Ok(plan)
}

/// The newest verification record, if any.
///
/// # Errors
/// Storage errors.
pub async fn newest_verification(ctx: &VerifyContext, cancel: &CancellationToken) -> Result<Option<VerificationRecord>, StorageError> {
    let cat = Catalog::load(ctx.storage.as_ref(), &ctx.layout, cancel).await?;
    match cat.verifications.last() {
        Some(v) => read_verification(ctx.storage.as_ref(), &v.key, cancel).await.map(Some),
        None => Ok(None),
    }
}

async fn verify_and_record(ctx: &VerifyContext, id: BackupId, cancel: &CancellationToken) -> Result<VerificationRecord, VerifyError> {
    let rec = verify_backup(ctx, id, cancel).await?;
    if let Err(e) = write_verification(ctx.storage.as_ref(), &ctx.layout, id, &rec, cancel).await {
        warn!(error = %e, "could not store the verification record");
    }
    Ok(rec)
}

/// Verifies one backup (the first of [`plan`] when `only` is `None`), stores the record and logs
/// the operator-facing lines, exactly once each.
///
/// # Errors
/// [`VerifyError`] when no verification could run (logged as `Verification could not run`).
pub async fn run_and_log(
    ctx: &VerifyContext,
    only: Option<BackupId>,
    cancel: &CancellationToken,
) -> Result<VerificationRecord, VerifyError> {
    let started = Instant::now();
    let id = match only {
        Some(id) => Ok(id),
        None => plan(ctx, cancel).await.map(|p| p[0]),
    };
    let result = match id {
        Ok(id) => {
            let span = tracing::info_span!("verify", key = %ctx.layout.backup(id));
            verify_and_record(ctx, id, cancel).instrument(span).await
        }
        Err(e) => Err(e),
    };
    match &result {
        Ok(rec) if rec.passed => info!(
            key = %rec.key,
            tables = rec.tables_checked,
            restored_bytes = rec.restored_bytes.unwrap_or(0),
            restore_secs = format!("{:.1}", rec.restore_secs),
            checks_secs = format!("{:.1}", rec.checks_secs),
            "Restore verification completed successfully"
        ),
        Ok(rec) => error!(key = %rec.key, reasons = %rec.reasons.join("; "), "Restore verification failed"),
        Err(VerifyError::NothingToVerify) => info!("Verification could not run: there is no complete backup to verify yet"),
        Err(VerifyError::Cancelled) => info!("Verification interrupted by shutdown; nothing was recorded"),
        Err(e) => error!("Verification could not run: {e}"),
    }
    info!("Verification finished in {:.1}s", started.elapsed().as_secs_f64());
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{TimeZone, Utc};

    #[test]
    fn scratch_names_are_prefixed_and_safe() {
        let n = scratch_name(BackupId::at(Utc.with_ymd_and_hms(2026, 11, 25, 5, 0, 0).unwrap()), 0xab12);
        assert_eq!(n, "pgvigil_verify_2026_11_25t05_00_00z_0000ab12");
        assert!(pg::scratch::is_scratch_name(&n));
    }
}
