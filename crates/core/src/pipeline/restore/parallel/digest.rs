//! The whole object read once more, through SHA-256 only, hashing each part on the way: proof that
//! the object is what its manifest records, and that the parts read on their own are its parts
//! (so that what was restored and what a stock `gunzip | psql` would read are the same bytes).

use super::plan::Plan;
use crate::infra::storage::{DynStorage, Key, StorageError};
use crate::pipeline::restore::stream::{digest_parts, StreamError};
use crate::records::manifest::Manifest;
use std::collections::BTreeMap;
use tokio_util::sync::CancellationToken;

/// What the second read found.
#[derive(Debug)]
pub(super) struct Proof {
    /// SHA-256 (hex) of each part, by its offset.
    pub parts: BTreeMap<u64, String>,
}

/// What the read gives: the object's SHA-256 (hex), its size, and each part's SHA-256 by offset.
type Read = Result<(String, u64, BTreeMap<u64, String>), StreamError>;

/// The task reading it, aborted when dropped (a restore that gave way or ran out of time).
pub(super) struct Reading(tokio::task::JoinHandle<Read>);

impl Drop for Reading {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Starts reading `key` in the background.
pub(super) fn start(storage: &DynStorage, key: &Key, plan: &Plan, cancel: &CancellationToken) -> Reading {
    let mut parts: Vec<(u64, u64)> = std::iter::once(&plan.before)
        .chain(plan.blocks.iter().map(|b| &b.part))
        .chain(&plan.between)
        .chain(std::iter::once(&plan.after))
        .map(|p| (p.offset, p.length))
        .collect();
    parts.sort_unstable();
    let (storage, key, cancel) = (storage.clone(), key.clone(), cancel.clone());
    Reading(tokio::spawn(async move { read(&storage, &key, &parts, &cancel).await }))
}

/// Reads the whole object: its SHA-256, its size, and the SHA-256 of each of `parts` (sorted by
/// offset, not overlapping), by offset.
async fn read(storage: &DynStorage, key: &Key, parts: &[(u64, u64)], cancel: &CancellationToken) -> Read {
    let (sha256, size, each) = digest_parts(storage.as_ref(), key, parts, None, cancel).await?;
    Ok((sha256, size, parts.iter().map(|(offset, _)| *offset).zip(each).collect()))
}

/// Waits for the reading, and compares it with the manifest: `Err(why)` when the object is not
/// what it records (the one-stream restore then judges it).
///
/// # Errors
/// [`StreamError`] when storage failed or shutdown interrupted.
pub(super) async fn proven(reading: &mut Reading, m: &Manifest, plan: &Plan) -> Result<Result<Proof, String>, StreamError> {
    let (sha256, size, parts) = (&mut reading.0)
        .await
        .map_err(|e| StorageError::other(format!("the second read of the object failed: {e}"), true))??;
    if size != m.size || sha256 != m.sha256 {
        return Ok(Err("the object is not what its manifest records".into()));
    }
    let recorded = std::iter::once((&plan.before, "the schema before the data".to_string()))
        .chain(plan.blocks.iter().map(|b| (&b.part, format!("the data of {}", b.table))))
        .chain(std::iter::once((&plan.after, "what follows the data".to_string())));
    for (part, what) in recorded {
        if part.sha256.as_ref() != parts.get(&part.offset) {
            return Ok(Err(format!("{what} is not what the manifest records")));
        }
    }
    Ok(Ok(Proof { parts }))
}
