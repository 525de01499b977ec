//! Why a backup failed, and the start-up check of `PG_DUMP_OPTIONS`' encoding.

use super::lease;
use crate::infra::pg::PgError;
use crate::infra::storage::StorageError;

/// `PG_DUMP_OPTIONS` with `--encoding` set to a client encoding psql reads differently from the
/// server (SJIS, BIG5, …): every restore would refuse such a dump, so the service refuses to start.
///
/// # Errors
/// A configuration problem of `PG_DUMP_OPTIONS`, naming the option.
pub fn check_dump_encoding(options: &[String]) -> Result<(), crate::infra::config::ConfigError> {
    match options.iter().find_map(|a| a.strip_prefix("--encoding=")) {
        Some(enc) if !crate::pipeline::stages::encoding::safe_encoding(enc) => Err(crate::infra::config::ConfigError {
            problems: vec![crate::infra::config::Problem {
                var: "PG_DUMP_OPTIONS",
                message: format!(
                    "--encoding={enc} is not allowed: psql reads a dump in that client encoding differently from the server (a quote or backslash byte can be half a character), so every restore would refuse it; use the database's own encoding (the default) or UTF8"
                ),
            }],
        }),
        _ => Ok(()),
    }
}

/// Why a backup failed.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    /// Database or client tool problem.
    #[error(transparent)]
    Pg(#[from] PgError),
    /// Storage problem.
    #[error(transparent)]
    Storage(StorageError),
    /// The dump stream did not make a complete backup.
    #[error(transparent)]
    Incomplete(#[from] Incomplete),
    /// Shutdown interrupted the backup; the upload was aborted.
    #[error("interrupted by shutdown; the upload was aborted")]
    Cancelled,
    /// Another backup service holds this prefix's lease.
    #[error(transparent)]
    Busy(#[from] lease::Busy),
    /// The lease was taken over during the backup (it stalled longer than the lease lasts); the
    /// upload was aborted.
    #[error("another backup service took over this prefix's lease during the backup; the upload was aborted")]
    LeaseLost,
    /// Sessions waited behind the dump's locks longer than `PG_DUMP_YIELD_AFTER`: the backup gave
    /// way (nothing was published) and is retried after the backoff.
    #[error("gave way to {sessions} session(s) that waited {waited_secs} s for the tables the dump held (PG_DUMP_YIELD_AFTER); nothing was published, the backup is retried after the backoff")]
    Yielded {
        /// Sessions waiting.
        sessions: i64,
        /// The longest wait, in seconds.
        waited_secs: u64,
    },
}

impl From<StorageError> for BackupError {
    fn from(e: StorageError) -> Self {
        match e {
            StorageError::Cancelled => BackupError::Cancelled,
            other => BackupError::Storage(other),
        }
    }
}

/// Why the stream from `pg_dump` did not make a complete backup: the cause as a value, its
/// I/O error kept as the source.
#[derive(Debug, thiserror::Error)]
pub enum Incomplete {
    /// `pg_dump` was started without an output to read (a bug).
    #[error("pg_dump has no stdout")]
    NoOutput,
    /// `pg_dump`'s output could not be read.
    #[error("reading pg_dump output: {0}")]
    Read(#[source] std::io::Error),
    /// Compressing failed.
    #[error("compression failed: {0}")]
    Compression(#[source] std::io::Error),
    /// Encrypting failed.
    #[error("encryption failed: {0}")]
    Encryption(#[source] std::io::Error),
    /// The dump ended inside a table's data.
    #[error("the dump ended inside the data of table {0}")]
    EndsInsideCopy(String),
    /// The dump does not end with `pg_dump`'s closing line.
    #[error("the dump does not end with pg_dump's closing line")]
    Unfinished,
    /// Filler could not end the body where the uploader's part ends (a bug).
    #[error("internal error: {filler} bytes of filler do not end the body at {end}")]
    Filler {
        /// Filler bytes that would have been sent.
        filler: u64,
        /// Where the part ends.
        end: u64,
    },
    /// The store kept another number of bytes than were sent.
    #[error("stored {stored} bytes but produced {produced}")]
    SizeMismatch {
        /// Bytes the store reported.
        stored: u64,
        /// Bytes sent.
        produced: u64,
    },
}

impl BackupError {
    /// One word for the failure metrics: `database`, `storage`, `dump`, `busy`, `lease_lost`,
    /// `yielded` or `shutdown`.
    pub fn cause(&self) -> &'static str {
        match self {
            BackupError::Pg(_) => "database",
            BackupError::Storage(_) => "storage",
            BackupError::Incomplete(_) => "dump",
            BackupError::Busy(_) => "busy",
            BackupError::LeaseLost => "lease_lost",
            BackupError::Yielded { .. } => "yielded",
            BackupError::Cancelled => "shutdown",
        }
    }

    /// Whether retrying soon may help.
    pub fn is_retryable(&self) -> bool {
        match self {
            BackupError::Pg(e) => e.is_retryable(),
            BackupError::Storage(e) => e.is_retryable(),
            BackupError::Incomplete(_) | BackupError::Busy(_) | BackupError::LeaseLost | BackupError::Yielded { .. } => true,
            BackupError::Cancelled => false,
        }
    }
}
