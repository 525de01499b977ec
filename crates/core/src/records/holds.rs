//! Holds: a backup that retention must keep until someone has looked. The backup service puts a
//! hold on the last backup before a table lost most of its rows (or vanished), so that the data as
//! it was is not pruned away while nobody has noticed; `pgvigil ack <backup>` lifts it.

use super::keys::{BackupId, Layout};
use crate::infra::storage::{get_bytes, put_bytes, Storage, StorageError, MAX_RECORD};
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

impl Hold {
    /// The problem `pgvigil status` and the status page report while the hold of `id` stands.
    pub fn problem(&self, id: BackupId) -> String {
        format!(
            "table anomaly seen in {}: {}; {} is kept until acknowledged (pgvigil ack {})",
            self.seen_in.rsplit('/').next().unwrap_or(&self.seen_in),
            self.reasons.join("; "),
            id.file_name(),
            id.file_name()
        )
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

/// Every hold under the prefix, with the backup it holds.
///
/// # Errors
/// Storage errors, or a hold that is not valid JSON.
pub async fn list(storage: &dyn Storage, layout: &Layout, cancel: &CancellationToken) -> Result<Vec<(BackupId, Hold)>, StorageError> {
    let mut out = Vec::new();
    for o in storage.list(&layout.holds_prefix(), cancel).await? {
        let Some(id) = layout.parse_hold(&o.key) else { continue };
        match get_bytes(storage, &layout.hold(id), MAX_RECORD, cancel).await {
            Ok(bytes) => {
                let hold =
                    serde_json::from_slice(&bytes).map_err(|e| StorageError::other(format!("{} is unreadable: {e}", o.key), false))?;
                out.push((id, hold));
            }
            Err(StorageError::NotFound(_)) => {}
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
