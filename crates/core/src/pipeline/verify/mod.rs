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
use crate::records::history::{write_verification, VerificationRecord};
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
    #[error("{0}")]
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

/// Name of the scratch database for a backup: prefix + timestamp, lower case, safe unquoted.
pub fn scratch_name(id: BackupId) -> String {
    format!("{SCRATCH_PREFIX}{}", id.stamp().to_ascii_lowercase().replace('-', "_"))
}

async fn choose_and_verify(
    ctx: &VerifyContext,
    only: Option<BackupId>,
    cancel: &CancellationToken,
) -> Result<VerificationRecord, VerifyError> {
    let id = match only {
        Some(id) => id,
        None => {
            let cat = Catalog::load(ctx.storage.as_ref(), &ctx.layout, cancel).await?;
            let (roll, pick) = (rand::random::<f64>(), rand::random::<f64>());
            choose(&cat, ctx.cfg.random_rate, roll, pick).ok_or(VerifyError::NothingToVerify)?
        }
    };
    let span = tracing::info_span!("verify", key = %ctx.layout.backup(id));
    async {
        let rec = verify_backup(ctx, id, cancel).await?;
        if let Err(e) = write_verification(ctx.storage.as_ref(), &ctx.layout, id, &rec, cancel).await {
            warn!(error = %e, "could not store the verification record");
        }
        Ok(rec)
    }
    .instrument(span)
    .await
}

/// Chooses a backup, verifies it, stores the record and logs the operator-facing lines.
///
/// # Errors
/// [`VerifyError`] when no verification could run (logged as `Verification could not run`).
pub async fn run_and_log(
    ctx: &VerifyContext,
    only: Option<BackupId>,
    cancel: &CancellationToken,
) -> Result<VerificationRecord, VerifyError> {
    let started = Instant::now();
    let result = choose_and_verify(ctx, only, cancel).await;
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
        let n = scratch_name(BackupId::at(Utc.with_ymd_and_hms(2026, 11, 25, 5, 0, 0).unwrap()));
        assert_eq!(n, "pgvigil_verify_2026_11_25t05_00_00z");
        assert!(pg::scratch::is_scratch_name(&n));
    }
}
