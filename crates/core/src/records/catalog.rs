//! A read-only view of what is in storage: backups, which are complete (have a manifest), and
//! the verification and failure records pgvigil keeps in its metadata area.
//!
//! Time from storage is bounded: a backup or record dated later than now plus
//! [`CLOCK_SKEW`] is set apart ([`Catalog::future`]) and counts for nothing — not as the newest
//! backup for the schedule, health and staleness, not for `latest`, restores or retention. A
//! host whose clock jumped ahead, or anyone who can write to the bucket, could otherwise silence
//! every alarm with one object named `backup_2099-…`.

use super::keys::{BackupId, Layout};
use crate::infra::storage::{ObjectMeta, Storage, StorageError};
use chrono::{DateTime, Utc};
use std::collections::BTreeSet;

/// How far ahead of this host's clock a backup or record may be dated and still count (clocks
/// of the backup host, the verify host and the operator's machine differ a little).
pub const CLOCK_SKEW: chrono::TimeDelta = chrono::TimeDelta::minutes(15);
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
    /// Backups dated later than now plus [`CLOCK_SKEW`], newest first: reported, never used,
    /// never deleted.
    pub future: Vec<BackupEntry>,
    /// Backups whose manifest has a signature (`BACKUP_SIGNING_KEY_FILE`).
    pub signatures: BTreeSet<BackupId>,
}

impl Catalog {
    /// Lists the backup prefix and the metadata area.
    ///
    /// # Errors
    /// Storage errors.
    pub async fn load(storage: &dyn Storage, layout: &Layout, cancel: &CancellationToken) -> Result<Self, StorageError> {
        let mut cat = Self::list(storage, layout, cancel).await?;
        cat.set_apart_future(Utc::now());
        Ok(cat)
    }

    /// Sets apart everything dated later than `now` plus [`CLOCK_SKEW`]: backups go to
    /// [`Catalog::future`]; verification and failure records of such times are dropped.
    pub fn set_apart_future(&mut self, now: DateTime<Utc>) {
        let limit = BackupId(now + CLOCK_SKEW);
        let (future, present): (Vec<_>, Vec<_>) = std::mem::take(&mut self.backups).into_iter().partition(|b| b.id > limit);
        self.backups = present;
        self.future.extend(future);
        self.verifications.retain(|v| v.at <= limit && v.backup <= limit);
        self.failures.retain(|(at, _)| *at <= limit);
        self.orphan_manifests.retain(|m| *m <= limit);
    }

    /// What to tell the operator while backups dated in the future are set apart (`None`: none).
    pub fn future_warning(&self) -> Option<String> {
        let newest = self.future.first()?;
        Some(format!(
            "{} backup(s) dated in the future, the newest {} ({}): ignored for the schedule, health, restores and retention, and left in place; check this host's clock and who can write to the bucket",
            self.future.len(),
            newest.key,
            newest.id.0.format("%Y-%m-%d %H:%M:%SZ")
        ))
    }

    /// Everything listed, whatever its date.
    async fn list(storage: &dyn Storage, layout: &Layout, cancel: &CancellationToken) -> Result<Self, StorageError> {
        let objects = storage.list(&layout.backups_prefix(), cancel).await?;
        let listed = storage.list(&layout.manifests_prefix(), cancel).await?;
        let manifests: BTreeSet<BackupId> = listed.iter().filter_map(|o| layout.parse_manifest(&o.key)).collect();
        let mut cat = Catalog {
            signatures: listed.iter().filter_map(|o| layout.parse_manifest_signature(&o.key)).collect(),
            ..Catalog::default()
        };
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

    /// Every object the listing found under the backup prefix, as (count, bytes): backups
    /// (incomplete and future-dated ones too), the latest copy and foreign objects.
    pub fn listed_totals(&self) -> (usize, u64) {
        let sizes = self.backups.iter().chain(&self.future).map(|b| b.size);
        let sizes: Vec<u64> = sizes.chain(self.latest.iter().chain(&self.foreign).map(|o| o.size)).collect();
        (sizes.len(), sizes.iter().fold(0, |a, b| a.saturating_add(*b)))
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

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(h: i64) -> BackupId {
        BackupId(Utc.with_ymd_and_hms(2026, 12, 3, 12, 0, 0).unwrap() + chrono::TimeDelta::hours(h))
    }

    fn entry(id: BackupId) -> BackupEntry {
        BackupEntry {
            id,
            key: format!("p/{}", id.file_name()),
            size: 1,
            complete: true,
        }
    }

    #[test]
    fn what_is_dated_after_now_plus_the_skew_counts_for_nothing() {
        let now = at(0).0;
        let far = BackupId(Utc.with_ymd_and_hms(2099, 1, 1, 0, 0, 0).unwrap());
        let soon = BackupId(now + chrono::TimeDelta::minutes(10));
        let later = BackupId(now + chrono::TimeDelta::minutes(20));
        let mut cat = Catalog {
            backups: vec![entry(far), entry(later), entry(soon), entry(at(-1))],
            verifications: vec![
                VerificationRef {
                    at: at(-1),
                    backup: at(-1),
                    passed: Some(true),
                    key: "v1".into(),
                },
                VerificationRef {
                    at: far,
                    backup: at(-1),
                    passed: Some(true),
                    key: "v2".into(),
                },
                VerificationRef {
                    at: at(-1),
                    backup: far,
                    passed: Some(true),
                    key: "v3".into(),
                },
            ],
            failures: vec![(at(-2), "f1".into()), (far, "f2".into())],
            orphan_manifests: vec![at(-3), far],
            ..Catalog::default()
        };
        cat.set_apart_future(now);
        let ids = |v: &[BackupEntry]| v.iter().map(|b| b.id).collect::<Vec<_>>();
        assert_eq!(ids(&cat.backups), vec![soon, at(-1)], "within the skew still counts");
        assert_eq!(ids(&cat.future), vec![far, later]);
        assert_eq!(cat.newest_complete().map(|b| b.id), Some(soon));
        assert_eq!(cat.verifications.iter().map(|v| v.key.as_str()).collect::<Vec<_>>(), ["v1"]);
        assert_eq!(cat.failures, vec![(at(-2), "f1".to_string())]);
        assert_eq!(cat.orphan_manifests, vec![at(-3)]);
    }
}
