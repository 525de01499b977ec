//! The operator layer: what each `pgvigil` command does, as functions that return typed results.
//! The CLI parses arguments, calls one of these, and renders what comes back; it runs no SQL and
//! makes no storage calls of its own. Long steps report progress through an [`Observer`].
//!
//! The operator layer uses `pipeline`, `records`, `policy`, `view` and `infra`; the daemons' code
//! (`pgvigil-service`) is another crate, which the CLI does not link.
//! It re-exports what its callers need ([`prelude`]), so the CLI imports nothing else from core.

mod backup_now;
mod check;
mod destinations;
mod list;
pub mod pick;
mod policy;
mod prune;
mod report;
pub mod restore;
mod restore_create;
mod restore_table;
mod roles;
mod status;

/// Everything the CLI needs besides [`Operator`]: configuration, process setup, and the types that
/// appear in the operator layer's results.
pub mod prelude {
    pub use crate::infra::config::{ConfigError, Databases, Role, Settings};
    pub use crate::infra::process;
    pub use crate::infra::secret::DbUrl;
    pub use crate::pipeline::restore::Progress;
    pub use crate::pipeline::stages::dumpscan::roles::quote as quote_ident;
    pub use crate::policy::report::{Report, Spread};
    pub use crate::policy::retention::KeptBecause;
    pub use crate::policy::status::{human_bytes, human_secs, Verdict};
    pub use crate::records::history::VerificationRecord;
}

pub use backup_now::backup_now;
pub use check::{CheckReport, CheckRow};
pub use list::ListRow;
pub use policy::{EffectivePolicy, PolicyOverrides};
pub use prune::PrunePlan;
pub use restore::{RestoreFailure, RestoreOutcome, RestoreRequest};
pub use restore_table::{TableOutcome, TableRequest};
pub use status::StatusView;

use crate::infra::config::{ConfigError, Settings};
use crate::infra::pg::PgError;
use crate::infra::storage::{self, DynStorage, StorageError};
use crate::pipeline::backup::BackupError;
use crate::pipeline::restore::Progress;
use crate::records::keys::Layout;
use tokio_util::sync::CancellationToken;

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
pub enum OperatorError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Storage failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// An object could not be read (says nothing about the backup itself).
    #[error("could not read {key} (this says nothing about the backup itself): {source}")]
    Unreadable {
        /// The object.
        key: String,
        /// Why.
        #[source]
        source: StorageError,
    },
    /// Shutdown interrupted the command.
    #[error("interrupted")]
    Cancelled,
    /// PostgreSQL or a client tool failed.
    #[error(transparent)]
    Pg(#[from] PgError),
    /// `backup-now` failed (already logged with `Backup failed`).
    #[error(transparent)]
    Backup(#[from] BackupError),
    /// `restore` did not restore.
    #[error(transparent)]
    Restore(#[from] RestoreFailure),
    /// The request itself cannot be carried out (a backup that does not exist, a bad argument).
    #[error("{0}")]
    Usage(String),
}

/// Hears about long steps, to show progress and notes to the operator.
pub trait Observer: Sync {
    /// A step that reads `total` bytes begins; the bytes done go into the returned counter.
    fn begin(&self, _label: &str, _total: u64) -> Option<Progress> {
        None
    }
    /// The current step ended.
    fn end(&self) {}
    /// A line for the operator about what is happening.
    fn note(&self, _line: &str) {}
}

/// An observer that shows nothing.
#[derive(Debug, Clone, Copy, Default)]
pub struct Quiet;

impl Observer for Quiet {}

/// A connection to one prefix of backups, for the operator commands.
#[derive(Debug, Clone)]
pub struct Operator {
    /// The configuration (the service's policy is read from here).
    settings: Settings,
    /// The store (read-mostly: no self-test writes).
    storage: DynStorage,
    /// Key names under `BACKUP_PREFIX`.
    layout: Layout,
}

impl Operator {
    /// Connects to the configured storage.
    ///
    /// # Errors
    /// When the storage client cannot be built.
    pub async fn open(settings: Settings) -> Result<Self, OperatorError> {
        let storage = storage::connect(&settings.storage).await?;
        let layout = Layout::new(&settings.storage.prefix);
        Ok(Self { settings, storage, layout })
    }

    /// Connects to the configured storage; when the primary destination cannot be listed and a
    /// secondary one is configured, to the secondary instead. Returns the operator and, after a
    /// fallback, a line saying so.
    ///
    /// # Errors
    /// When a storage client cannot be built.
    pub async fn open_reachable(settings: Settings, cancel: &CancellationToken) -> Result<(Self, Option<String>), OperatorError> {
        let op = Self::open(settings).await?;
        let Some(secondary) = op.settings.secondary.clone() else {
            return Ok((op, None));
        };
        let listed = tokio::time::timeout(destinations::ANSWER_WITHIN, op.storage.list(&op.layout.backups_prefix(), cancel))
            .await
            .unwrap_or_else(|_| Err(StorageError::other("it did not answer within 60 s", true)));
        match listed {
            // An outage only: a refusal (credentials, a missing bucket) is shown as it is.
            Err(e) if e.is_retryable() => {
                let note = format!(
                    "the {} destination cannot be read ({e}); reading from the other destination ({}) instead",
                    if op.reads_secondary() { "secondary" } else { "primary" },
                    secondary.backend
                );
                let swapped = swap(op.settings);
                Ok((Self::open(swapped).await?, Some(note)))
            }
            _ => Ok((op, None)),
        }
    }

    /// Whether this operator reads the secondary destination (`--from secondary`).
    fn reads_secondary(&self) -> bool {
        self.settings.reading_secondary
    }

    /// The configuration in use.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// `s3://bucket at …` or `directory …`.
    pub fn storage_description(&self) -> String {
        self.storage.describe()
    }

    /// Key names under the prefix.
    pub fn layout(&self) -> &Layout {
        &self.layout
    }
}

/// The settings that read the secondary destination (`--from secondary`).
///
/// # Errors
/// When no secondary destination is configured.
pub fn from_secondary(settings: Settings) -> Result<Settings, OperatorError> {
    if settings.secondary.is_none() {
        return Err(OperatorError::Usage(
            "--from secondary needs a second destination: set SECONDARY_S3_BUCKET or SECONDARY_BACKUP_DIR (see docs/configuration.md)"
                .into(),
        ));
    }
    Ok(swap(settings))
}

/// The settings with the two destinations' places swapped.
fn swap(mut settings: Settings) -> Settings {
    if let Some(secondary) = settings.secondary.take() {
        let primary = std::mem::replace(&mut settings.storage, secondary);
        settings.secondary = Some(primary);
        settings.reading_secondary = !settings.reading_secondary;
    }
    settings
}

/// The databases a configuration with `BACKUP_DATABASES` covers (`None` for one database under
/// `BACKUP_PREFIX` itself): the list, or for `*` every database with backups under the prefix.
///
/// # Errors
/// Storage errors while listing.
pub async fn databases(settings: &Settings, cancel: &tokio_util::sync::CancellationToken) -> Result<Option<Vec<String>>, OperatorError> {
    use crate::infra::config::Databases;
    match &settings.databases {
        Databases::One => Ok(None),
        Databases::List(names) => Ok(Some(names.clone())),
        Databases::All => Ok(Some(crate::records::databases::with_backups_in(settings, cancel).await?)),
    }
}

/// The settings for one database of a multi-database configuration (its prefix and source URL).
///
/// # Errors
/// A name no URL can carry.
pub fn for_database(settings: &Settings, database: &str) -> Result<Settings, OperatorError> {
    crate::records::databases::settings_for(settings, database).map_err(OperatorError::Usage)
}
