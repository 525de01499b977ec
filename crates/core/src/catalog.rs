//! A read-only view of what is in storage: backups, which are complete (have a manifest), and
//! the verification and failure records pgvigil keeps in its metadata area.

use crate::keys::{BackupId, Layout};
use crate::storage::{get_bytes, put_bytes, ObjectMeta, Storage, StorageError};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

/// One backup object under the prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupEntry {
    /// Identity (timestamp).
    pub id: BackupId,
    /// Object key.
    pub key: String,
    /// Object size.
    pub size: u64,
    /// True when its manifest exists.
    pub complete: bool,
}

/// Everything listed under one prefix.
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    /// Backups, newest first.
    pub backups: Vec<BackupEntry>,
    /// `backup_latest.sql.gz`, if present.
    pub latest: Option<ObjectMeta>,
    /// Manifests whose backup object is gone.
    pub orphan_manifests: Vec<BackupId>,
    /// Verification records: (verified at, backup), oldest first.
    pub verifications: Vec<(BackupId, BackupId)>,
    /// Backup failure records: (attempt time, record key), oldest first.
    pub failures: Vec<(BackupId, String)>,
    /// Other objects under the prefix (not pgvigil's); never touched.
    pub foreign: Vec<ObjectMeta>,
}

impl Catalog {
    /// Lists the backup prefix and the metadata area.
    ///
    /// # Errors
    /// Storage errors.
    pub async fn load(storage: &dyn Storage, layout: &Layout) -> Result<Self, StorageError> {
        let objects = storage.list(&layout.backups_prefix()).await?;
        let manifests: BTreeSet<BackupId> = storage
            .list(&layout.manifests_prefix())
            .await?
            .iter()
            .filter_map(|o| layout.parse_manifest(&o.key))
            .collect();
        let mut cat = Catalog::default();
        for o in objects {
            if let Some(id) = layout.parse_backup(&o.key) {
                cat.backups.push(BackupEntry {
                    id,
                    key: o.key.clone(),
                    size: o.size,
                    complete: manifests.contains(&id),
                });
            } else if o.key == layout.latest().as_str() {
                cat.latest = Some(o);
            } else {
                cat.foreign.push(o);
            }
        }
        cat.backups.sort_by_key(|b| std::cmp::Reverse(b.id));
        let present: BTreeSet<BackupId> = cat.backups.iter().map(|b| b.id).collect();
        cat.orphan_manifests = manifests.into_iter().filter(|m| !present.contains(m)).collect();
        cat.verifications = storage
            .list(&layout.verifications_prefix())
            .await?
            .iter()
            .filter_map(|o| layout.parse_verification(&o.key))
            .collect();
        cat.verifications.sort();
        cat.failures = storage
            .list(&layout.failures_prefix())
            .await?
            .into_iter()
            .filter_map(|o| layout.parse_failure(&o.key).map(|at| (at, o.key)))
            .collect();
        cat.failures.sort();
        Ok(cat)
    }

    /// Complete backups, newest first.
    pub fn complete(&self) -> impl Iterator<Item = &BackupEntry> {
        self.backups.iter().filter(|b| b.complete)
    }

    /// The newest complete backup.
    pub fn newest_complete(&self) -> Option<&BackupEntry> {
        self.complete().next()
    }

    /// Whether a backup has at least one verification record.
    pub fn is_verified(&self, id: BackupId) -> bool {
        self.verifications.iter().any(|(_, b)| *b == id)
    }

    /// Sizes of up to `n` complete backups older than `id`, newest first.
    pub fn recent_sizes_before(&self, id: BackupId, n: usize) -> Vec<u64> {
        self.complete().filter(|b| b.id < id).take(n).map(|b| b.size).collect()
    }
}

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
) -> Result<(), StorageError> {
    let json = serde_json::to_vec_pretty(rec).map_err(|e| StorageError::other(e.to_string(), false))?;
    put_bytes(storage, &layout.verification(rec.verified_at, id), json.into()).await
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
) -> Result<VerificationRecord, StorageError> {
    let bytes = get_bytes(storage, &layout.verification(at.0, id)).await?;
    serde_json::from_slice(&bytes).map_err(|e| StorageError::other(format!("verification record unreadable: {e}"), false))
}

/// Stores a failure record.
///
/// # Errors
/// Storage errors.
pub async fn write_failure(storage: &dyn Storage, layout: &Layout, rec: &FailureRecord) -> Result<(), StorageError> {
    let json = serde_json::to_vec_pretty(rec).map_err(|e| StorageError::other(e.to_string(), false))?;
    put_bytes(storage, &layout.failure(rec.at), json.into()).await
}

/// Reads one failure record by its key (from [`Catalog::failures`]).
///
/// # Errors
/// Storage errors or unreadable JSON.
pub async fn read_failure(storage: &dyn Storage, key: &str) -> Result<FailureRecord, StorageError> {
    let key = crate::keys::Key::new(key).map_err(|e| StorageError::other(e, false))?;
    let bytes = get_bytes(storage, &key).await?;
    serde_json::from_slice(&bytes).map_err(|e| StorageError::other(format!("failure record unreadable: {e}"), false))
}
