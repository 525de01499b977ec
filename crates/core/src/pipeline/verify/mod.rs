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
mod privileges;
pub use privileges::needed_roles;
pub mod queries;
mod restore;
mod run;

pub use choose::choose;
pub use queries::split_statements;
pub use run::{cleanup_leftovers, verify_backup, UNTRUSTED};

use crate::infra::config::{Settings, ToolsConfig, VerifyConfig};
use crate::infra::pg::{self, PgError};
use crate::infra::secret::DbUrl;
use crate::infra::storage::{DynStorage, StorageError};
use crate::pipeline::restore::EnvironmentFault;
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
    /// `BACKUP_ENCRYPTION_IDENTITY_FILE`: what opens encrypted backups.
    pub identities: crate::infra::config::Identities,
    /// `BACKUP_TRUSTED_KEYS`: only backups these keys signed are verified (empty: any).
    pub trusted: crate::infra::signing::TrustedKeys,
    /// The bound on sessions loading table data, shared by every verification of this process
    /// (`VERIFY_JOBS` in total).
    pub sessions: std::sync::Arc<tokio::sync::Semaphore>,
}

/// The process's bound on sessions loading table data: `jobs` permits, made once.
fn shared_sessions(jobs: usize) -> std::sync::Arc<tokio::sync::Semaphore> {
    static BOUND: std::sync::OnceLock<std::sync::Arc<tokio::sync::Semaphore>> = std::sync::OnceLock::new();
    BOUND
        .get_or_init(|| std::sync::Arc::new(tokio::sync::Semaphore::new(jobs.max(1))))
        .clone()
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
            identities: settings.identities.clone(),
            trusted: settings.trusted.clone(),
            sessions: shared_sessions(settings.verify.jobs),
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
    /// The restore stopped because of the verify server, the role, psql, or what the server lacks.
    #[error(transparent)]
    Restore(EnvironmentFault),
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
    #[error("{what} could not complete: {source}")]
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
    /// The backup is encrypted and no identity held opens it.
    #[error("{0}")]
    Key(String),
    /// The first verification (no earlier one to go by, no `VERIFY_TIMEOUT`) ran past the
    /// default deadline: that says nothing about the backup.
    #[error("the verification did not finish within the default {} s, and no earlier verification shows how long this database takes; set VERIFY_TIMEOUT to what a restore of it needs (e.g. twice the time of a manual restore)", .0.as_secs())]
    Deadline(std::time::Duration),
    /// Another verification holds this scratch database.
    #[error("scratch database {0} is in use by another verifier")]
    ScratchInUse(String),
    /// The scratch database could not be created.
    #[error("could not create scratch database {name}{}: {source}", if matches!(source, PgError::Rejected(_)) { " (the role needs CREATEDB)" } else { "" })]
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
    /// The backup was deleted (by retention) between choosing and verifying it.
    #[error("{0} was deleted (by retention) before it could be verified")]
    Vanished(String),
}

impl CouldNotRun {
    /// Whether a later retry may succeed without anyone changing anything (an outage); false when
    /// something must be fixed first (a role, a version, an extension, a file).
    pub fn is_retryable(&self) -> bool {
        match self {
            CouldNotRun::Storage(e) => e.is_retryable(),
            CouldNotRun::Pg(e) | CouldNotRun::Check { source: e, .. } => e.is_retryable(),
            CouldNotRun::Restore(f) => f.is_transient(),
            CouldNotRun::Scratch { source, .. } => source.is_retryable(),
            CouldNotRun::ScratchInUse(_) => true,
            CouldNotRun::VerifyServerTooOld { .. } | CouldNotRun::QueriesFile { .. } | CouldNotRun::Key(_) | CouldNotRun::Deadline(_) => {
                false
            }
        }
    }
}

impl VerifyError {
    /// Whether a later retry may succeed without anyone changing anything.
    pub fn is_retryable(&self) -> bool {
        match self {
            VerifyError::CouldNotRun(c) => c.is_retryable(),
            VerifyError::Cancelled | VerifyError::NothingToVerify | VerifyError::Vanished(_) => true,
        }
    }

    /// One word for the failure metrics: where the environment failed, or `no_backup`,
    /// `vanished`, `shutdown`. (A failed verdict is not a failed run: it is a result.)
    pub fn cause(&self) -> &'static str {
        match self {
            VerifyError::CouldNotRun(c) => match c {
                CouldNotRun::Storage(_) => "storage",
                CouldNotRun::Pg(_) | CouldNotRun::Check { .. } => "database",
                CouldNotRun::Restore(_) => "restore",
                CouldNotRun::Scratch { .. } | CouldNotRun::ScratchInUse(_) => "scratch",
                CouldNotRun::VerifyServerTooOld { .. } => "version",
                CouldNotRun::QueriesFile { .. } => "queries_file",
                CouldNotRun::Key(_) => "key",
                CouldNotRun::Deadline(_) => "timeout",
            },
            VerifyError::Cancelled => "shutdown",
            VerifyError::NothingToVerify => "no_backup",
            VerifyError::Vanished(_) => "vanished",
        }
    }
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
    if let Some(text) = cat.future_warning() {
        warn!("Future-dated backup: {text}");
    }
    let (roll, pick) = (rand::random::<f64>(), rand::random::<f64>());
    let plan = choose(&cat, ctx.cfg.random_rate, roll, pick);
    if plan.is_empty() {
        return Err(VerifyError::NothingToVerify);
    }
    Ok(plan)
}

/// The newest verification record of the newest backup that was verified, with that backup.
///
/// # Errors
/// Storage errors.
pub async fn newest_verification(
    ctx: &VerifyContext,
    cancel: &CancellationToken,
) -> Result<Option<(BackupId, VerificationRecord)>, StorageError> {
    let cat = Catalog::load(ctx.storage.as_ref(), &ctx.layout, cancel).await?;
    let Some(v) = cat.complete().find_map(|b| cat.latest_verification_of(b.id)) else {
        return Ok(None);
    };
    let rec = read_verification(ctx.storage.as_ref(), &v.key, cancel).await?;
    Ok(Some((v.backup, rec)))
}

/// One run of the service: the backups [`plan`] names, each verified, recorded and logged. When
/// no plan can be made, that is logged as one run too. Returns the verdicts reached, and the
/// error that stopped the run, if one did (a verification that could not run stops it).
pub async fn run_planned(ctx: &VerifyContext, cancel: &CancellationToken) -> (Vec<(BackupId, VerificationRecord)>, Option<VerifyError>) {
    let started = Instant::now();
    let ids = match plan(ctx, cancel).await {
        Ok(ids) => ids,
        Err(e) => {
            log_result(Err(&e), started);
            return (Vec::new(), Some(e));
        }
    };
    let mut done = Vec::new();
    for id in ids {
        match run_and_log(ctx, Some(id), cancel).await {
            Ok(rec) => done.push((id, rec)),
            Err(e) => return (done, Some(e)),
        }
    }
    (done, None)
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
    log_result(result.as_ref(), started);
    result
}

/// The operator-facing lines of one verification, exactly once each.
fn log_result(result: Result<&VerificationRecord, &VerifyError>, started: Instant) {
    match result {
        Ok(rec) if rec.passed => info!(
            key = %rec.key,
            tables = rec.tables_checked,
            restored_bytes = rec.restored_bytes.unwrap_or(0),
            restore_secs = format!("{:.1}", rec.restore_secs),
            checks_secs = format!("{:.1}", rec.checks_secs),
            "Restore verification completed successfully"
        ),
        Ok(rec) => {
            error!(key = %rec.key, reasons = %rec.reasons.join("; "), causes = %rec.causes.iter().map(|c| c.name()).collect::<Vec<_>>().join(","), "Restore verification failed")
        }
        Err(VerifyError::NothingToVerify) => info!("Verification could not run: there is no complete backup to verify yet"),
        Err(VerifyError::Cancelled) => info!("Verification interrupted by shutdown; nothing was recorded"),
        Err(e @ VerifyError::Vanished(_)) => info!("Verification skipped: {e}"),
        Err(e) => error!("Verification could not run: {e}"),
    }
    info!("Verification finished in {:.1}s", started.elapsed().as_secs_f64());
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
