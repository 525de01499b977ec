//! `pgvigil check --deep` on all cores: the object is read once (hashed, decrypted when it is an
//! age file) and cut into gzip members by the length each member records in its header
//! ([`crate::pipeline::stages::compress::member_len`]); members are inflated in parallel by
//! zlib, each to exactly its recorded end and checked against its CRC-32 and length
//! ([`super::members::inflate`]: as gunzip reads it), and their SQL goes through the dump scanner in
//! order. Objects written before members recorded their length take the sequential
//! path ([`super::stream`]).

use super::integrity::StreamReport;
use super::members::{inflate, next_member, Next};
use super::stream::{get, identities_for, open_source, read_to_the_end, recv_or_cancel, stream, Hashing, Progress, StreamError};
use crate::infra::storage::{Key, Storage, StorageError};
use crate::pipeline::stages::dumpscan::DumpScanner;
use age::x25519::Identity;
use std::collections::VecDeque;
use std::io::Read;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// What the reading thread found, besides the members it sent.
struct Cut {
    sha256: String,
    size: u64,
    /// The members could not be cut (damaged, or a member without its length after the first).
    damage: Option<String>,
    key_error: Option<String>,
    /// The first member records no length: an object written before that (sequential path).
    unsplittable: bool,
}

/// Reads `reader` on a blocking thread, sending whole members to `tx`.
fn cut(
    reader: crate::infra::storage::ObjectReader,
    progress: Option<Progress>,
    identities: Option<&[Identity]>,
    tx: &tokio::sync::mpsc::Sender<Vec<u8>>,
) -> Result<Cut, String> {
    let mut hashing = Hashing::new(reader, progress);
    let (damage, key_error, unsplittable) = match open_source(&mut hashing, identities) {
        Err(super::stream::Opened::Damaged(e)) => (Some(e), None, false),
        Err(super::stream::Opened::Key(e)) => (None, Some(e), false),
        Ok(mut source) => match send_members(&mut source, tx)? {
            Members::Whole => (None, None, false),
            Members::Damaged(e) => (Some(e), None, false),
            Members::Unsplittable => (None, None, true),
        },
    };
    if let Some(e) = hashing.io_error() {
        return Err(format!("the download broke: {e}"));
    }
    if unsplittable {
        // The sequential path reads it again; nothing more to learn here.
        return Ok(Cut {
            sha256: String::new(),
            size: 0,
            damage,
            key_error,
            unsplittable,
        });
    }
    // The hash covers the whole object, whatever happened above (unless the consumer is gone).
    hash_the_rest(&mut hashing, tx)?;
    let (sha256, size) = hashing.finish();
    Ok(Cut {
        sha256,
        size,
        damage,
        key_error,
        unsplittable,
    })
}

/// How cutting the object into members ended.
enum Members {
    /// Every member was sent.
    Whole,
    /// The members stop being readable here, for this reason.
    Damaged(String),
    /// The first member does not record its length (written before members did).
    Unsplittable,
}

/// Reads the members one after the other by the length each records, and sends each whole.
/// `Err` only when the consumer went away.
fn send_members(source: &mut dyn Read, tx: &tokio::sync::mpsc::Sender<Vec<u8>>) -> Result<Members, String> {
    let mut first = true;
    loop {
        let mut member = Vec::new();
        match next_member(source, first, &mut member) {
            Next::Member => {
                first = false;
                if tx.blocking_send(member).is_err() {
                    return Err("the consumer stopped".into());
                }
            }
            Next::End => return Ok(Members::Whole),
            Next::Damaged(why) => return Ok(Members::Damaged(why)),
            Next::Unsplittable => return Ok(Members::Unsplittable),
        }
    }
}

/// Reads (and so hashes) whatever of the object is left.
fn hash_the_rest(hashing: &mut dyn Read, tx: &tokio::sync::mpsc::Sender<Vec<u8>>) -> Result<(), String> {
    let mut sink = vec![0u8; 1 << 20];
    loop {
        if tx.is_closed() {
            return Err("the consumer stopped".into());
        }
        match hashing.read(&mut sink) {
            Ok(0) => return Ok(()),
            Ok(_) => {}
            Err(e) => return Err(format!("the download broke: {e}")),
        }
    }
}

/// Streams `key` through the integrity stages like [`stream`], inflating members on all cores.
///
/// # Errors
/// As [`stream`].
pub async fn deep(
    storage: &dyn Storage,
    key: &Key,
    identities: &[Identity],
    progress: Option<Progress>,
    cancel: &CancellationToken,
) -> Result<StreamReport, StreamError> {
    let ids = identities_for(key, identities)?;
    let (reader, announced) = get(storage, key, cancel).await?;
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<u8>>(4);
    let p = progress.clone();
    let reading = tokio::task::spawn_blocking(move || cut(reader, p, ids.as_deref(), &tx));
    // Bounded: members in flight hold about 2 MiB each.
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get()).min(16) + 1;
    let mut queue: VecDeque<JoinHandle<Result<Vec<u8>, String>>> = VecDeque::new();
    let mut scanner = DumpScanner::new();
    let mut gzip_error: Option<String> = None;
    // A task that failed (panicked, or the runtime is stopping) says nothing about the backup.
    let mut take = |job: Result<Result<Vec<u8>, String>, tokio::task::JoinError>, scanner: &mut DumpScanner| -> Result<(), StreamError> {
        match job.map_err(|e| StorageError::other(format!("inflate task failed: {e}"), true))? {
            Ok(sql) if gzip_error.is_none() => scanner.feed(&sql),
            Ok(_) => {}
            Err(e) => {
                gzip_error.get_or_insert(e);
            }
        }
        Ok(())
    };
    while let Some(member) = recv_or_cancel(&mut rx, cancel).await? {
        if queue.len() >= workers {
            if let Some(job) = queue.pop_front() {
                take(job.await, &mut scanner)?;
            }
        }
        queue.push_back(tokio::task::spawn_blocking(move || inflate(&member)));
    }
    while let Some(job) = queue.pop_front() {
        take(job.await, &mut scanner)?;
    }
    let read = reading
        .await
        .map_err(|e| StorageError::other(format!("reading task failed: {e}"), true))?
        .map_err(|e| StorageError::other(format!("reading {key}: {e}"), true))?;
    if read.unsplittable {
        // Written before members recorded their length: the sequential path reads it.
        return stream(storage, key, identities, progress, cancel).await;
    }
    read_to_the_end(key, read.size, announced)?;
    Ok(StreamReport {
        sha256: read.sha256,
        size: read.size,
        gzip_error: read.damage.or(gzip_error),
        key_error: read.key_error,
        scan: scanner.finish(),
    })
}
