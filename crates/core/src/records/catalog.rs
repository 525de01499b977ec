//! A read-only view of what is in storage: backups, which are complete (have a manifest), and
//! the verification and failure records pgvigil keeps in its metadata area.

use super::keys::{BackupId, Layout};
use crate::infra::storage::{ObjectMeta, Storage, StorageError};
use std::collections::BTreeSet;
use tokio_util::sync::CancellationToken;

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

/// A verification record as a listing shows it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct VerificationRef {
    /// When the verification ran (to the second).
    pub at: BackupId,
    /// The backup verified.
    pub backup: BackupId,
    /// Its verdict, from the record's name (`None` for records written before it was).
    pub passed: Option<bool>,
    /// The record's key.
    pub key: String,
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
    /// Verification records, oldest first.
    pub verifications: Vec<VerificationRef>,
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
    pub async fn load(storage: &dyn Storage, layout: &Layout, cancel: &CancellationToken) -> Result<Self, StorageError> {
        let objects = storage.list(&layout.backups_prefix(), cancel).await?;
        let manifests: BTreeSet<BackupId> = storage
            .list(&layout.manifests_prefix(), cancel)
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
            } else if o.key == layout.latest().as_str() || o.key == layout.latest_of(true).as_str() {
                cat.latest = Some(o);
            } else {
                cat.foreign.push(o);
            }
        }
        cat.backups.sort_by_key(|b| std::cmp::Reverse(b.id));
        let present: BTreeSet<BackupId> = cat.backups.iter().map(|b| b.id).collect();
        cat.orphan_manifests = manifests.into_iter().filter(|m| !present.contains(m)).collect();
        cat.verifications = storage
            .list(&layout.verifications_prefix(), cancel)
            .await?
            .into_iter()
            .filter_map(|o| {
                layout.parse_verification(&o.key).map(|(at, backup, passed)| VerificationRef {
                    at,
                    backup,
                    passed,
                    key: o.key,
                })
            })
            .collect();
        cat.verifications.sort();
        cat.failures = storage
            .list(&layout.failures_prefix(), cancel)
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
        self.verifications.iter().any(|v| v.backup == id)
    }

    /// The newest verification record of a backup.
    pub fn latest_verification_of(&self, id: BackupId) -> Option<&VerificationRef> {
        self.verifications.iter().rev().find(|v| v.backup == id)
    }

    /// Sizes of up to `n` complete backups older than `id`, newest first.
    pub fn recent_sizes_before(&self, id: BackupId, n: usize) -> Vec<u64> {
        self.complete().filter(|b| b.id < id).take(n).map(|b| b.size).collect()
    }
}
