//! What storage holds about one database over a window of time, for the weekly report and the
//! status page: every backup still stored with its manifest's sizes and duration, every
//! verification and every failed attempt in the window, and what the prefix holds in all.
//!
//! Records are read once and kept in a [`RecordCache`] (they are never rewritten: a new run
//! writes a new record), so a page served every minute reads only what is new. Everything comes
//! from the bucket and is untrusted: a record that cannot be read is counted, not fatal; numbers
//! that make no sense (negative, not finite) are left out; dates outside the window are dropped.

use super::catalog::{Catalog, VerificationRef};
use super::history::{read_failure, read_verification, Evidence, FailureRecord, VerificationRecord};
use super::keys::{BackupId, Layout, META_ROOT};
use super::manifest;
use crate::infra::storage::{Storage, StorageError};
use chrono::{DateTime, Utc};
use std::collections::HashMap;
use tokio_util::sync::CancellationToken;

/// One stored backup, as the charts need it.
#[derive(Debug, Clone, PartialEq)]
pub struct BackupPoint {
    /// When it was taken.
    pub id: BackupId,
    /// Its object key.
    pub key: String,
    /// Compressed size (the stored object's).
    pub size: u64,
    /// Size of the SQL inside, from the manifest.
    pub sql_size: u64,
    /// Seconds the backup took, from the manifest (`None`: not a sensible number).
    pub duration_secs: Option<f64>,
}

/// Records read before, by what identifies them (a backup also by its size: an object replaced
/// by another is read again). It holds only what the last load asked for.
#[derive(Debug, Default)]
pub struct RecordCache {
    backups: HashMap<(BackupId, String, u64), BackupPoint>,
    verifications: HashMap<String, VerificationRecord>,
    failures: HashMap<String, FailureRecord>,
}

/// How many records are read at once.
const READS_AT_ONCE: usize = 8;
/// The most of a record's text (a reason, an error) that is kept: a record may be up to
/// `MAX_RECORD` large, and a page needs a sentence.
pub const TEXT_KEPT: usize = 2000;

/// `text` cut to [`TEXT_KEPT`] bytes.
fn shortened(text: String) -> String {
    super::lenient::shortened(text, TEXT_KEPT)
}

/// Reads each of `keys` through `cache`, [`READS_AT_ONCE`] at a time: a record read before is not
/// read again, and each is cached as soon as it arrives (a load cut short by a deadline keeps what
/// it read). Returns the records in the order of `keys`, and the keys that could not be read; the
/// cache then holds only records of `keys`.
async fn through_cache<K, T, F, Fut>(keys: Vec<K>, cache: &mut HashMap<K, T>, read: F) -> Result<(Vec<T>, Vec<K>), StorageError>
where
    K: Eq + std::hash::Hash + Clone,
    T: Clone,
    F: Fn(K) -> Fut,
    Fut: std::future::Future<Output = Result<Option<T>, StorageError>>,
{
    use futures::StreamExt as _;
    let missing: Vec<K> = keys.iter().filter(|k| !cache.contains_key(k)).cloned().collect();
    let mut arriving = futures::stream::iter(missing)
        .map(|k| {
            let fut = read(k.clone());
            async move { (k, fut.await) }
        })
        .buffer_unordered(READS_AT_ONCE);
    let mut failed = std::collections::HashSet::new();
    while let Some((key, read)) = arriving.next().await {
        match read {
            Ok(Some(r)) => {
                cache.insert(key, r);
            }
            Err(StorageError::Cancelled) => return Err(StorageError::Cancelled),
            Ok(None) | Err(_) => {
                failed.insert(key);
            }
        }
    }
    drop(arriving);
    let wanted: std::collections::HashSet<&K> = keys.iter().collect();
    cache.retain(|k, _| wanted.contains(k));
    let records = keys.iter().filter_map(|k| cache.get(k).cloned()).collect();
    Ok((records, keys.into_iter().filter(|k| failed.contains(k)).collect()))
}

/// What storage holds about one database over the window.
#[derive(Debug, Clone, Default)]
pub struct Timeline {
    /// The catalog (every backup stored, whatever its age).
    pub catalog: Catalog,
    /// Complete backups taken in the window, oldest first.
    pub backups: Vec<BackupPoint>,
    /// Verification records of the window (and the newest, however old), oldest first, without
    /// their evidence.
    pub verifications: Vec<VerificationRecord>,
    /// Failure records of the window (and the newest, however old), oldest first.
    pub failures: Vec<FailureRecord>,
    /// Records in the window that could not be read (missing since the listing, or not valid).
    pub unreadable: usize,
    /// Backups held after a table anomaly, until acknowledged.
    pub holds: Vec<(BackupId, super::holds::Hold)>,
    /// The newest verification, when its record could not be read: its name still says whether it
    /// passed.
    pub newest_verification_unreadable: Option<VerificationRef>,
    /// Bytes stored under the prefix and in pgvigil's metadata area.
    pub total_bytes: u64,
    /// Objects stored there.
    pub object_count: usize,
}

/// A duration read from storage, when it is a sensible one.
fn sensible(secs: f64) -> Option<f64> {
    (secs.is_finite() && secs >= 0.0).then_some(secs)
}

impl Timeline {
    /// Loads the window from `since` to now, reading only records `cache` does not hold yet.
    ///
    /// # Errors
    /// Storage errors from the listings (a record that cannot be read is counted instead).
    pub async fn load(
        storage: &dyn Storage,
        layout: &Layout,
        since: DateTime<Utc>,
        cache: &mut RecordCache,
        cancel: &CancellationToken,
    ) -> Result<Self, StorageError> {
        let catalog = Catalog::load(storage, layout, cancel).await?;
        let since = BackupId::at(since);
        let mut t = Timeline::default();
        let backups: Vec<_> = catalog
            .complete()
            .filter(|b| b.id >= since)
            .map(|b| (b.id, b.key.clone(), b.size))
            .collect();
        let (points, unreadable) = through_cache(backups, &mut cache.backups, |(id, key, size)| async move {
            let m = manifest::read(storage, layout, id, cancel).await?;
            Ok(m.map(|m| BackupPoint {
                id,
                key,
                size,
                sql_size: m.uncompressed_size,
                duration_secs: sensible(m.duration_secs()),
            }))
        })
        .await?;
        t.backups = points.into_iter().rev().collect();
        t.unreadable += unreadable.len();
        // The newest verification and failure count for the verdict, however old they are.
        let newest_v = catalog.verifications.last();
        let verifications = catalog.verifications.iter().filter(|v| v.at >= since || Some(*v) == newest_v);
        let keys = verifications.map(|v| v.key.clone()).collect();
        let (records, unreadable) = through_cache(keys, &mut cache.verifications, |key| async move {
            let mut r = read_verification(storage, &key, cancel).await?;
            // The page needs the figures and a sentence, not the evidence (which can list every
            // table) nor pages of text.
            r.evidence = Evidence::default();
            r.key = shortened(r.key);
            r.reasons = r.reasons.into_iter().take(10).map(shortened).collect();
            Ok(Some(r))
        })
        .await?;
        t.verifications = records;
        t.unreadable += unreadable.len();
        t.newest_verification_unreadable = newest_v.filter(|v| unreadable.contains(&v.key)).cloned();
        let newest_f = catalog.failures.last().map(|(_, k)| k);
        let keys = catalog
            .failures
            .iter()
            .filter(|(at, k)| *at >= since || Some(k) == newest_f)
            .map(|(_, k)| k.clone())
            .collect();
        let (records, unreadable) = through_cache(keys, &mut cache.failures, |key| async move {
            let mut r = read_failure(storage, &key, cancel).await?;
            r.error = shortened(r.error);
            Ok(Some(r))
        })
        .await?;
        t.failures = records;
        t.unreadable += unreadable.len();
        t.holds = super::holds::list(storage, layout, cancel).await?;
        // The backup prefix was listed for the catalog; only the metadata area is listed here.
        let (count, bytes) = catalog.listed_totals();
        let metadata = storage.list(&format!("{META_ROOT}/{}/", layout.prefix()), cancel).await?;
        t.total_bytes = metadata.iter().fold(bytes, |a, o| a.saturating_add(o.size));
        t.object_count = count + metadata.len();
        t.catalog = catalog;
        Ok(t)
    }
}

#[cfg(test)]
#[path = "timeline_tests.rs"]
mod tests;
