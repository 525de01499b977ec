//! Why a service could not start, or a one-shot run failed: [`StartupError`], which says whether
//! starting again can help, and [`Listing`] for the databases a service covers.

use pgvigil_core::infra::config::ConfigError;
use pgvigil_core::infra::pg::PgError;
use pgvigil_core::infra::storage::StorageError;
use pgvigil_core::pipeline::backup::BackupError;
use pgvigil_core::pipeline::verify::VerifyError;

/// Why the databases to cover (`BACKUP_DATABASES=*` or a list) could not be listed.
#[derive(Debug, thiserror::Error)]
pub enum Listing {
    /// The listing did not finish within a minute.
    #[error("listing the databases took longer than a minute")]
    TimedOut,
    /// The verify service found no database with backups under the prefix.
    #[error("no database has backups under {prefix}/ yet (BACKUP_DATABASES=*)")]
    NoBackupsYet {
        /// The storage prefix searched.
        prefix: String,
    },
    /// The source server refused or failed the listing.
    #[error(transparent)]
    Server(PgError),
    /// A database whose name no connection URL can carry (the reason names it).
    #[error("{reason}")]
    Unusable {
        /// The database.
        database: String,
        /// Why its URL cannot be made.
        reason: String,
    },
}

/// Why a service (or a one-shot run) stopped with a failure. Says whether retrying can help.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    /// The configuration is invalid (exit status 2).
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Storage failed its self-test.
    #[error(transparent)]
    Storage(StorageError),
    /// `--once`: the backup did not complete.
    #[error("exiting with status 1 because the backup did not complete ({})", if .0.is_retryable() { "a retry may succeed" } else { "fix the cause above first" })]
    Backup(BackupError),
    /// `--once`: the verification failed (the backup is bad).
    #[error("exiting with status 1: {0} failed verification (see the reasons above)")]
    VerificationFailed(String),
    /// `--once`: the verification could not run (the environment is broken; already logged).
    #[error("exiting with status 1: the verification could not run (see above; {})", if .0.is_retryable() { "a retry may succeed" } else { "fix the cause first" })]
    Verify(VerifyError),
    /// A variable the service needs is missing (validation normally reports it first).
    #[error("{0} is required")]
    Missing(&'static str),
    /// Shutdown came before the service was ready.
    #[error("shutdown requested before the service was ready")]
    Cancelled,
    /// The databases to cover could not be listed.
    #[error("could not list the databases to cover: {0}")]
    Listing(Listing),
    /// `--once` over several databases: these failed (each already logged).
    #[error("exiting with status 1: the run failed for {}", .0.join(", "))]
    Databases(Vec<String>),
}

impl StartupError {
    /// Whether starting again later may succeed without changing anything.
    pub fn is_retryable(&self) -> bool {
        match self {
            StartupError::Config(_) | StartupError::VerificationFailed(_) | StartupError::Missing(_) => false,
            StartupError::Storage(e) => e.is_retryable(),
            StartupError::Backup(e) => e.is_retryable(),
            StartupError::Verify(e) => e.is_retryable(),
            StartupError::Listing(Listing::Server(e)) => e.is_retryable(),
            StartupError::Listing(Listing::Unusable { .. }) => false,
            StartupError::Cancelled | StartupError::Databases(_) | StartupError::Listing(_) => true,
        }
    }
}
