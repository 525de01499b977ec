//! The effective settings each service runs with, recorded in the metadata area when it starts,
//! so that `pgvigil prune`, `status` and `report`, run from any shell, apply the service's policy
//! rather than the shell's defaults.

use super::keys::Layout;
use crate::infra::storage::{get_bytes, put_bytes, Key, Storage, StorageError, MAX_RECORD};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

/// What the backup service runs with.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct BackupPolicy {
    /// `BACKUP_INTERVAL` in seconds.
    pub interval_secs: u64,
    /// `BACKUP_RETENTION_DAYS`.
    pub retention_days: u64,
    /// `BACKUP_MIN_KEEP`.
    pub min_keep: usize,
    /// `COMPRESSION_LEVEL`.
    pub compression_level: u32,
    /// Calendar retention; records written before it existed have none.
    #[serde(default)]
    pub keep: KeepRecord,
    /// When the service started and wrote this.
    pub recorded_at: DateTime<Utc>,
    /// pgvigil's version.
    pub version: String,
}

/// Calendar retention as recorded: `BACKUP_KEEP_*` (0: off) and `BACKUP_TIMEZONE`. Read back, it
/// is untrusted like any record: the operator commands check the zone name and cap the counts.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(default)]
pub struct KeepRecord {
    /// `BACKUP_KEEP_HOURLY`.
    pub hourly: u32,
    /// `BACKUP_KEEP_DAILY`.
    pub daily: u32,
    /// `BACKUP_KEEP_WEEKLY`.
    pub weekly: u32,
    /// `BACKUP_KEEP_MONTHLY`.
    pub monthly: u32,
    /// `BACKUP_KEEP_YEARLY`.
    pub yearly: u32,
    /// `BACKUP_TIMEZONE` (an IANA name; empty means UTC).
    pub timezone: String,
}

/// What the verify service runs with.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct VerifyPolicy {
    /// `VERIFY_INTERVAL` in seconds.
    pub interval_secs: u64,
    /// When the service started and wrote this.
    pub recorded_at: DateTime<Utc>,
    /// pgvigil's version.
    pub version: String,
}

async fn write<T: Serialize>(storage: &dyn Storage, key: &Key, rec: &T, cancel: &CancellationToken) -> Result<(), StorageError> {
    let json = serde_json::to_vec_pretty(rec).map_err(|e| StorageError::other(e.to_string(), false))?;
    put_bytes(storage, key, json.into(), cancel).await
}

async fn read<T: for<'de> Deserialize<'de>>(
    storage: &dyn Storage,
    key: &Key,
    cancel: &CancellationToken,
) -> Result<Option<T>, StorageError> {
    match get_bytes(storage, key, MAX_RECORD, cancel).await {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| StorageError::other(format!("{key} is unreadable: {e}"), false)),
        Err(StorageError::NotFound(_)) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Records the backup service's policy.
///
/// # Errors
/// Storage errors.
pub async fn write_backup(
    storage: &dyn Storage,
    layout: &Layout,
    rec: &BackupPolicy,
    cancel: &CancellationToken,
) -> Result<(), StorageError> {
    write(storage, &layout.policy("backup"), rec, cancel).await
}

/// The backup service's recorded policy, if one was recorded.
///
/// # Errors
/// Storage errors, or an unreadable record.
pub async fn read_backup(storage: &dyn Storage, layout: &Layout, cancel: &CancellationToken) -> Result<Option<BackupPolicy>, StorageError> {
    read(storage, &layout.policy("backup"), cancel).await
}

/// Records the verify service's policy.
///
/// # Errors
/// Storage errors.
pub async fn write_verify(
    storage: &dyn Storage,
    layout: &Layout,
    rec: &VerifyPolicy,
    cancel: &CancellationToken,
) -> Result<(), StorageError> {
    write(storage, &layout.policy("verify"), rec, cancel).await
}

/// The verify service's recorded policy, if one was recorded.
///
/// # Errors
/// Storage errors, or an unreadable record.
pub async fn read_verify(storage: &dyn Storage, layout: &Layout, cancel: &CancellationToken) -> Result<Option<VerifyPolicy>, StorageError> {
    read(storage, &layout.policy("verify"), cancel).await
}

/// A service's policy, either kind.
#[derive(Debug, Clone, PartialEq)]
pub enum ServicePolicy {
    /// The backup service's.
    Backup(BackupPolicy),
    /// The verify service's.
    Verify(VerifyPolicy),
}

/// Records a service's policy.
///
/// # Errors
/// Storage errors.
pub async fn write_service(
    storage: &dyn Storage,
    layout: &Layout,
    p: &ServicePolicy,
    cancel: &CancellationToken,
) -> Result<(), StorageError> {
    match p {
        ServicePolicy::Backup(b) => write_backup(storage, layout, b, cancel).await,
        ServicePolicy::Verify(v) => write_verify(storage, layout, v, cancel).await,
    }
}
