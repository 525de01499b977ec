//! `pgvigil check --deep` on all cores: the object is read once (hashed, decrypted when it is an
//! age file) and cut into gzip members by the length each member records in its header
//! ([`crate::pipeline::stages::compress::member_len`]); members are inflated in parallel with
//! libdeflate (which checks each one's CRC-32 and length) and their SQL goes through the dump
//! scanner in order. Objects written before members recorded their length take the sequential
//! path ([`super::stream`]).

use super::integrity::StreamReport;
use super::stream::{get, identities_for, open_source, read_to_the_end, recv_or_cancel, stream, Hashing, Progress, StreamError};
use crate::infra::storage::{Key, Storage, StorageError};
use crate::pipeline::stages::compress::{member_len, BLOCK_SIZE, MEMBER_HEADER};
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

/// Largest SQL a member may claim (members hold [`BLOCK_SIZE`] bytes; more means damage).
const MAX_MEMBER_SQL: usize = 4 * BLOCK_SIZE;

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
    let damaged = |why: &str| Ok(Members::Damaged(why.to_string()));
    let mut first = true;
    loop {
        let mut member = vec![0u8; MEMBER_HEADER];
        match read_full(source, &mut member) {
            Ok(0) if !first => return Ok(Members::Whole),
            Ok(0) => return damaged("the object holds no gzip member"),
            Ok(n) if n < MEMBER_HEADER => return damaged("the gzip stream ends inside a member header (truncated)"),
            Ok(_) => {}
            Err(e) => return damaged(&e.to_string()),
        }
        let Some(len) = member_len(&member).filter(|l| *l >= MEMBER_HEADER + 8 && *l <= MAX_MEMBER_SQL + (1 << 20)) else {
            return if first {
                Ok(Members::Unsplittable)
            } else {
                damaged("a gzip member does not record its length (damaged, or not written by pgvigil)")
            };
        };
        first = false;
        member.resize(len, 0);
        match read_full(source, &mut member[MEMBER_HEADER..]) {
            Ok(n) if n == len - MEMBER_HEADER => {}
            Ok(_) => return damaged("the gzip stream ends inside a member (truncated)"),
            Err(e) => return damaged(&e.to_string()),
        }
        if tx.blocking_send(member).is_err() {
            return Err("the consumer stopped".into());
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

fn read_full(r: &mut dyn Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

thread_local! {
    /// One decompressor per inflating thread.
    static INFLATE: std::cell::RefCell<libdeflater::Decompressor> = std::cell::RefCell::new(libdeflater::Decompressor::new());
}

/// Inflates one member. libdeflate checks the CRC-32 and length that follow the deflate data;
/// the footer at the end of the slice must be that same one (a recorded length that swallowed
/// the next member would otherwise hide it).
fn inflate(member: &[u8]) -> Result<Vec<u8>, String> {
    let footer = member
        .len()
        .checked_sub(8)
        .and_then(|at| member.get(at..))
        .ok_or("a gzip member is too short (damaged)")?;
    let crc = u32::from_le_bytes([footer[0], footer[1], footer[2], footer[3]]);
    let isize = u32::from_le_bytes([footer[4], footer[5], footer[6], footer[7]]) as usize;
    if isize > MAX_MEMBER_SQL {
        return Err(format!("a gzip member claims {isize} bytes of SQL (damaged)"));
    }
    let mut out = vec![0u8; isize];
    let inflated = INFLATE.with(|d| d.borrow_mut().gzip_decompress(member, &mut out));
    match inflated {
        Ok(n) if n == isize && libdeflater::crc32(&out) == crc => Ok(out),
        Ok(_) => Err("a gzip member's recorded length does not match its data (damaged)".into()),
        Err(e) => Err(format!("a gzip member is damaged: {e}")),
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
