//! The whole object read once more, through SHA-256 only, hashing each part on the way: proof that
//! the object is what its manifest records, and that the parts read on their own are its parts
//! (so that what was restored and what a stock `gunzip | psql` would read are the same bytes).

use super::plan::Plan;
use crate::infra::storage::{DynStorage, Key, StorageError};
use crate::pipeline::restore::stream::{get, read_to_the_end, StreamError};
use crate::records::manifest::Manifest;
use sha2::{Digest as _, Sha256};
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
/// offset, not overlapping).
async fn read(storage: &DynStorage, key: &Key, parts: &[(u64, u64)], cancel: &CancellationToken) -> Read {
    use tokio::io::AsyncReadExt;
    let (mut reader, announced) = get(storage.as_ref(), key, cancel).await?;
    let mut whole = Sha256::new();
    let mut each: Vec<Sha256> = parts.iter().map(|_| Sha256::new()).collect();
    let mut first = 0;
    let mut at = 0u64;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = tokio::select! {
            biased;
            () = cancel.cancelled() => return Err(StreamError::Cancelled),
            r = reader.read(&mut buf) => r.map_err(|e| StorageError::other(format!("reading {key}: the download broke: {e}"), true))?,
        };
        if n == 0 {
            break;
        }
        let chunk = &buf[..n];
        whole.update(chunk);
        let end = at + n as u64;
        while parts.get(first).is_some_and(|(o, l)| o.saturating_add(*l) <= at) {
            first += 1;
        }
        for (i, (offset, length)) in parts.iter().enumerate().skip(first) {
            if *offset >= end {
                break;
            }
            let (from, to) = ((*offset).max(at), offset.saturating_add(*length).min(end));
            if from < to {
                each[i].update(&chunk[(from - at) as usize..(to - at) as usize]);
            }
        }
        at = end;
    }
    read_to_the_end(key, at, announced)?;
    let hashes = parts
        .iter()
        .zip(each)
        .map(|((offset, _), h)| (*offset, hex::encode(h.finalize())))
        .collect();
    Ok((hex::encode(whole.finalize()), at, hashes))
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
