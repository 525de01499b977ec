//! Holds: a backup that retention must keep until someone has looked. The backup service puts a
//! hold on the last backup before a table lost most of its rows (or vanished), so that the data as
//! it was is not pruned away while nobody has noticed; `pgvigil ack <backup>` lifts it.

use super::keys::{BackupId, Layout};
use crate::infra::storage::{get_bytes, put_bytes, Storage, StorageError};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

/// Why a backup is held.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Hold {
    /// The backup kept.
    pub backup: String,
    /// The backup in which the change was seen.
    pub seen_in: String,
    /// What changed, in plain words (one line per table).
    pub reasons: Vec<String>,
    /// When the hold was put.
    pub since: DateTime<Utc>,
}

/// The most of a hold's text that is shown: the tables named, and the bytes of each name.
const SHOWN_REASONS: usize = 10;
const SHOWN_BYTES: usize = 300;
/// The largest hold read (pgvigil writes a few lines; more is not its writing).
const MAX_HOLD: u64 = 1024 * 1024;

/// `text` cut to [`SHOWN_BYTES`].
fn cut(text: &str) -> String {
    super::lenient::shortened(text.to_string(), SHOWN_BYTES)
}

impl Hold {
    /// The problem `pgvigil status` and the status page report while the hold of `id` stands.
    pub fn problem(&self, id: BackupId) -> String {
        let mut reasons: Vec<String> = self.reasons.iter().take(SHOWN_REASONS).map(|r| cut(r)).collect();
        if self.reasons.len() > SHOWN_REASONS {
            reasons.push(format!("and {} more", self.reasons.len() - SHOWN_REASONS));
        }
        format!(
            "table anomaly seen in {}: {}; {} is kept until acknowledged (pgvigil ack {})",
            cut(self.seen_in.rsplit('/').next().unwrap_or(&self.seen_in)),
            reasons.join("; "),
            id.file_name(),
            id.file_name()
        )
    }

    /// A hold that is there but cannot be read still holds its backup (`why`: what is wrong).
    fn unreadable(key: &str, why: &str) -> Self {
        Self {
            backup: String::new(),
            seen_in: key.to_string(),
            reasons: vec![format!("the hold {key} is unreadable ({})", cut(why))],
            since: DateTime::<Utc>::UNIX_EPOCH,
        }
    }
}

/// Puts a hold on backup `id`.
///
/// # Errors
/// Storage errors.
pub async fn put(
    storage: &dyn Storage,
    layout: &Layout,
    id: BackupId,
    hold: &Hold,
    cancel: &CancellationToken,
) -> Result<(), StorageError> {
    let json = serde_json::to_vec_pretty(hold).map_err(|e| StorageError::other(e.to_string(), false))?;
    put_bytes(storage, &layout.hold(id), json.into(), cancel).await
}

/// Every hold under the prefix, with the backup it holds. A hold that cannot be read (not JSON,
/// or larger than any hold pgvigil writes) still holds its backup, and says so: whoever can write
/// to the bucket could put it there, but a backup is never deleted because a record is damaged.
///
/// # Errors
/// Storage errors.
pub async fn list(storage: &dyn Storage, layout: &Layout, cancel: &CancellationToken) -> Result<Vec<(BackupId, Hold)>, StorageError> {
    let mut out = Vec::new();
    for o in storage.list(&layout.holds_prefix(), cancel).await? {
        let Some(id) = layout.parse_hold(&o.key) else { continue };
        match get_bytes(storage, &layout.hold(id), MAX_HOLD, cancel).await {
            Ok(bytes) => match serde_json::from_slice(&bytes) {
                Ok(hold) => out.push((id, hold)),
                Err(e) => out.push((id, Hold::unreadable(&o.key, &e.to_string()))),
            },
            Err(StorageError::NotFound(_)) => {}
            Err(e @ StorageError::Oversized { .. }) => out.push((id, Hold::unreadable(&o.key, &e.to_string()))),
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}

/// Lifts the hold on backup `id`; `false` when there was none.
///
/// # Errors
/// Storage errors.
pub async fn lift(storage: &dyn Storage, layout: &Layout, id: BackupId, cancel: &CancellationToken) -> Result<bool, StorageError> {
    let key = layout.hold(id);
    if storage.head(&key, cancel).await?.is_none() {
        return Ok(false);
    }
    storage.delete_many(std::slice::from_ref(&key), cancel).await?;
    Ok(true)
}
