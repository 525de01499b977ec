//! The records pgvigil keeps about what happened: one per verification (the verdict and its
//! evidence) and one per failed backup attempt. They live in the metadata area, never under the
//! backup prefix.

use super::keys::{BackupId, Layout};
use crate::infra::storage::{get_bytes, put_bytes, Key, Storage, StorageError};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

/// The stored result of one verification.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct VerificationRecord {
    /// Backup object key.
    pub key: String,
    /// When the verification started.
    pub verified_at: DateTime<Utc>,
    /// Pass or fail.
    pub passed: bool,
    /// Every reason it failed (empty when it passed).
    pub reasons: Vec<String>,
    /// Seconds spent downloading + restoring (they overlap: the restore streams the download).
    pub restore_secs: f64,
    /// Seconds spent on checks after the restore.
    pub checks_secs: f64,
    /// Total seconds.
    pub total_secs: f64,
    /// Size of the restored database in bytes.
    pub restored_bytes: Option<u64>,
    /// Number of tables whose row counts were compared.
    pub tables_checked: usize,
}

/// The stored record of a failed backup attempt.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FailureRecord {
    /// When the attempt started.
    pub at: DateTime<Utc>,
    /// The cause in plain words.
    pub error: String,
    /// Whether it looked transient.
    pub retryable: bool,
}

/// Stores a verification record.
///
/// # Errors
/// Storage errors.
pub async fn write_verification(
    storage: &dyn Storage,
    layout: &Layout,
    id: BackupId,
    rec: &VerificationRecord,
    cancel: &CancellationToken,
) -> Result<(), StorageError> {
    let json = serde_json::to_vec_pretty(rec).map_err(|e| StorageError::other(e.to_string(), false))?;
    put_bytes(storage, &layout.verification(rec.verified_at, id), json.into(), cancel).await
}

/// Reads one verification record.
///
/// # Errors
/// Storage errors or unreadable JSON.
pub async fn read_verification(
    storage: &dyn Storage,
    layout: &Layout,
    at: BackupId,
    id: BackupId,
    cancel: &CancellationToken,
) -> Result<VerificationRecord, StorageError> {
    let bytes = get_bytes(storage, &layout.verification(at.0, id), cancel).await?;
    serde_json::from_slice(&bytes).map_err(|e| StorageError::other(format!("verification record unreadable: {e}"), false))
}

/// Stores a failure record.
///
/// # Errors
/// Storage errors.
pub async fn write_failure(
    storage: &dyn Storage,
    layout: &Layout,
    rec: &FailureRecord,
    cancel: &CancellationToken,
) -> Result<(), StorageError> {
    let json = serde_json::to_vec_pretty(rec).map_err(|e| StorageError::other(e.to_string(), false))?;
    put_bytes(storage, &layout.failure(rec.at), json.into(), cancel).await
}

/// Reads one failure record by its key (from [`Catalog::failures`]).
///
/// # Errors
/// Storage errors or unreadable JSON.
pub async fn read_failure(storage: &dyn Storage, key: &str, cancel: &CancellationToken) -> Result<FailureRecord, StorageError> {
    let key = Key::new(key).map_err(|e| StorageError::other(e, false))?;
    let bytes = get_bytes(storage, &key, cancel).await?;
    serde_json::from_slice(&bytes).map_err(|e| StorageError::other(format!("failure record unreadable: {e}"), false))
}
