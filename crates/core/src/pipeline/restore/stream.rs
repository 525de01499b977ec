//! Streaming one object out of storage: download → SHA-256 and length → multi-member gunzip →
//! dump scan → (optionally) psql. Restoring, the scan is the statement gate: every statement is
//! parsed and judged before psql sees it, and a refusal stops the download at once.
//!
//! A broken download is a storage error, never a verdict on the backup: the reader's I/O errors
//! are told apart from gzip's own, and a body shorter than the store announced is reported as a
//! download that ended early.

use super::integrity::StreamReport;
use crate::infra::pg::psql::{Outcome, PsqlTransaction};
use crate::infra::storage::{Key, Storage, StorageError};
use crate::pipeline::stages::dumpscan::{DumpScanner, GateRules, ScanResult};
use crate::pipeline::stages::seal::{self, OpenError};
use crate::records::keys::SEALED;
use age::x25519::Identity;
use bytes::Bytes;
use sha2::{Digest, Sha256};
use std::io::Read;
use tokio_util::io::SyncIoBridge;
use tokio_util::sync::CancellationToken;

/// Why streaming could not be completed (not a verdict on the backup).
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    /// Storage unavailable, object missing, or the download broke.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// Shutdown.
    #[error("cancelled")]
    Cancelled,
    /// The object is encrypted and no identity held opens it: the key file's fault, not the
    /// backup's.
    #[error("{0}")]
    Key(String),
}

/// Why the blocking decoder stopped before the end.
enum Stop {
    /// The download or the consumer broke.
    Broken(String),
}

/// How feeding psql ended.
#[derive(Debug)]
pub(super) enum Fed {
    /// The whole object was read.
    Read(Box<StreamReport>),
    /// psql stopped for a reason that lies with the target or the connection: reading the rest
    /// of the backup could tell nothing more.
    Stopped(Outcome),
}

/// Bytes downloaded so far, shared with whoever shows progress.
pub type Progress = std::sync::Arc<std::sync::atomic::AtomicU64>;

/// Reader wrapper that hashes and counts what passes through and remembers its own I/O error, so
/// that a broken download is not mistaken for damaged gzip data.
pub(super) struct Hashing<R> {
    inner: R,
    sha: Sha256,
    size: u64,
    progress: Option<Progress>,
    io_error: Option<String>,
}

impl Hashing<SyncIoBridge<crate::infra::storage::ObjectReader>> {
    /// Hashes a download read on a blocking thread.
    pub(super) fn new(reader: crate::infra::storage::ObjectReader, progress: Option<Progress>) -> Self {
        Self {
            inner: SyncIoBridge::new(reader),
            sha: Sha256::new(),
            size: 0,
            progress,
            io_error: None,
        }
    }
}

impl<R> Hashing<R> {
    /// The download's own error, if it broke (taken).
    pub(super) fn io_error(&mut self) -> Option<String> {
        self.io_error.take()
    }

    /// SHA-256 (hex) and size of what was read.
    pub(super) fn finish(self) -> (String, u64) {
        (hex::encode(self.sha.finalize()), self.size)
    }
}

/// Why an object could not be opened for reading its gzip stream.
pub(super) enum Opened {
    /// Not a readable age file: the object is damaged.
    Damaged(String),
    /// No identity held opens it (or its header is damaged: the hash tells).
    Key(String),
}

/// The gzip stream of an object: the bytes themselves, or, with `identities`, what the age file
/// decrypts to.
pub(super) fn open_source<'a, R: Read>(hashing: &'a mut Hashing<R>, identities: Option<&[Identity]>) -> Result<Box<dyn Read + 'a>, Opened> {
    match identities {
        None => Ok(Box::new(hashing)),
        Some(ids) => seal::open(hashing, ids).map_err(|e| match e {
            OpenError::Damaged(e) => Opened::Damaged(format!("the object is not a readable age file: {e}")),
            other => Opened::Key(other.to_string()),
        }),
    }
}

impl<R: Read> Hashing<R> {
    /// Reads (and so hashes) what is left, so that the hash covers the whole download; why the
    /// download broke, if it did.
    pub(super) fn read_rest(&mut self) -> Result<(), String> {
        let mut sink = vec![0u8; CHUNK];
        loop {
            match self.read(&mut sink) {
                Ok(0) => return Ok(()),
                Ok(_) => {}
                Err(e) => return Err(format!("the download broke: {e}")),
            }
        }
    }
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = match self.inner.read(buf) {
            Ok(n) => n,
            Err(e) => {
                self.io_error = Some(e.to_string());
                return Err(e);
            }
        };
        self.sha.update(&buf[..n]);
        self.size += n as u64;
        if let Some(p) = &self.progress {
            p.store(self.size, std::sync::atomic::Ordering::Relaxed);
        }
        Ok(n)
    }
}

/// Stack of the scanning thread, where the gate runs PostgreSQL's parser (virtual memory: only
/// what a deeply nested statement touches is ever used).
pub(super) const PARSER_STACK: usize = 256 * 1024 * 1024;

/// Chunk size handed from the decompressor to the consumer: below the allocator's mmap threshold
/// ([`crate::infra::process::memory::MMAP_THRESHOLD`]), so that the copy made of each chunk comes
/// from the heap and is reused, instead of a mapping of its own, faulted in and unmapped per chunk.
pub(super) const CHUNK: usize = 128 * 1024;

/// What the blocking decoder found about the bytes (the SQL went through the channel).
struct Decoded {
    sha256: String,
    size: u64,
    gzip_error: Option<String>,
    key_error: Option<String>,
}

/// Downloads, hashes, decrypts (with `identities`, when the object is encrypted) and inflates
/// `reader` on a blocking thread, sending the SQL to `tx`.
fn decode(
    reader: crate::infra::storage::ObjectReader,
    progress: Option<Progress>,
    identities: Option<&[Identity]>,
    tx: &tokio::sync::mpsc::Sender<Bytes>,
) -> Result<Decoded, Stop> {
    let mut hashing = Hashing::new(reader, progress);
    let mut gzip_error = None;
    let mut key_error = None;
    {
        let source = match open_source(&mut hashing, identities) {
            Ok(r) => Some(r),
            Err(Opened::Damaged(e)) => {
                gzip_error = Some(e);
                None
            }
            // No identity held unwraps the file key: the wrong key file — or a damaged or
            // replaced header, which the hash of the whole object (read below) tells apart.
            Err(Opened::Key(e)) => {
                key_error = Some(e);
                None
            }
        };
        if let Some(source) = source {
            let mut gz = flate2::read::MultiGzDecoder::new(source);
            let mut buf = vec![0u8; CHUNK];
            loop {
                match gz.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => {
                        if tx.blocking_send(Bytes::copy_from_slice(&buf[..n])).is_err() {
                            return Err(Stop::Broken("the consumer stopped".into()));
                        }
                    }
                    Err(e) => {
                        gzip_error = Some(e.to_string());
                        break;
                    }
                }
            }
        }
    }
    if let Some(e) = hashing.io_error() {
        return Err(Stop::Broken(format!("the download broke: {e}")));
    }
    // Read whatever follows a damaged member so the hash covers the whole object.
    hashing.read_rest().map_err(Stop::Broken)?;
    let (sha256, size) = hashing.finish();
    Ok(Decoded {
        sha256,
        size,
        gzip_error,
        key_error,
    })
}

/// Starts downloading `key`: the body and the size the store announced.
pub(super) async fn get(
    storage: &dyn Storage,
    key: &Key,
    cancel: &CancellationToken,
) -> Result<(crate::infra::storage::ObjectReader, u64), StreamError> {
    storage.get(key, cancel).await.map_err(|e| match e {
        StorageError::Cancelled => StreamError::Cancelled,
        other => StreamError::Storage(other),
    })
}

/// The next item from a reading thread, `None` once it is done, or cancellation first.
///
/// # Errors
/// [`StreamError::Cancelled`].
pub(super) async fn recv_or_cancel<T>(
    rx: &mut tokio::sync::mpsc::Receiver<T>,
    cancel: &CancellationToken,
) -> Result<Option<T>, StreamError> {
    tokio::select! {
        biased;
        () = cancel.cancelled() => Err(StreamError::Cancelled),
        item = rx.recv() => Ok(item),
    }
}

/// A download shorter than the store announced ended early: a storage error, not damage.
pub(super) fn read_to_the_end(key: &Key, size: u64, announced: u64) -> Result<(), StreamError> {
    if size < announced {
        return Err(StorageError::other(format!("reading {key}: the download ended after {size} of {announced} bytes"), true).into());
    }
    Ok(())
}

/// The identities to open `key` with: `None` when it is not encrypted. An encrypted object
/// without any identity is refused before anything is downloaded.
pub(super) fn identities_for(key: &Key, identities: &[Identity]) -> Result<Option<Vec<Identity>>, StreamError> {
    if !key.as_str().ends_with(SEALED) {
        return Ok(None);
    }
    if identities.is_empty() {
        return Err(StreamError::Key(OpenError::NoIdentity.to_string()));
    }
    Ok(Some(identities.to_vec()))
}

/// Reads `key` through SHA-256 only, as fast as storage delivers: its size and hash, to compare
/// with the manifest (`pgvigil check` at its default depth). Needs no identity for an encrypted
/// object: the manifest's hash is that of the ciphertext.
///
/// # Errors
/// [`StreamError`] when storage fails (also a download that ends early) or shutdown interrupts.
pub async fn digest(
    storage: &dyn Storage,
    key: &Key,
    progress: Option<Progress>,
    cancel: &CancellationToken,
) -> Result<(String, u64), StreamError> {
    let (sha256, size, _) = digest_parts(storage, key, &[], progress, cancel).await?;
    Ok((sha256, size))
}

/// [`digest`], and the SHA-256 (hex) of each of `parts` (offset and length, sorted by offset, not
/// overlapping) on the way, in their order.
///
/// # Errors
/// As [`digest`].
pub(super) async fn digest_parts(
    storage: &dyn Storage,
    key: &Key,
    parts: &[(u64, u64)],
    progress: Option<Progress>,
    cancel: &CancellationToken,
) -> Result<(String, u64, Vec<String>), StreamError> {
    use tokio::io::AsyncReadExt;
    let (mut reader, announced) = get(storage, key, cancel).await?;
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
        if let Some(p) = &progress {
            p.store(at, std::sync::atomic::Ordering::Relaxed);
        }
    }
    read_to_the_end(key, at, announced)?;
    let each = each.into_iter().map(|h| hex::encode(h.finalize())).collect();
    Ok((hex::encode(whole.finalize()), at, each))
}

/// Streams `key` through the integrity stages without restoring it (`pgvigil check --deep`).
///
/// # Errors
/// [`StreamError`] when storage fails or shutdown interrupts: the object was not fully read, so
/// nothing is known about it.
pub async fn stream(
    storage: &dyn Storage,
    key: &Key,
    identities: &[Identity],
    progress: Option<Progress>,
    cancel: &CancellationToken,
) -> Result<StreamReport, StreamError> {
    match feed(storage, key, identities, None, progress, cancel).await? {
        Fed::Read(report) => Ok(*report),
        // Without psql nothing can stop the stream early.
        Fed::Stopped(_) => Ok(StreamReport::default()),
    }
}

/// The scanning stage, on a blocking thread: reads the SQL, and when `gate` is given judges it
/// and sends on what psql is to receive. Stops at once when the gate refuses (dropping `rx`
/// stops the download) or when nobody takes its output.
pub(super) fn scan_stage(
    mut rx: tokio::sync::mpsc::Receiver<Bytes>,
    tx: &tokio::sync::mpsc::Sender<Vec<u8>>,
    gate: Option<GateRules>,
) -> ScanResult {
    let Some(rules) = gate else {
        let mut scanner = DumpScanner::new();
        while let Some(chunk) = rx.blocking_recv() {
            scanner.feed(&chunk);
        }
        return scanner.finish();
    };
    let mut scanner = DumpScanner::gated(rules);
    while let Some(chunk) = rx.blocking_recv() {
        let mut out = Vec::with_capacity(chunk.len() + 256);
        scanner.feed_filtered(&chunk, &mut out);
        if scanner.refused() || (!out.is_empty() && tx.blocking_send(out).is_err()) {
            break;
        }
    }
    scanner.finish()
}

/// Feeds psql what the gate passed, until the end, shutdown, or a failure of psql's own that
/// reading further could not change (`Some`). Once psql stopped reading, the rest is taken and
/// dropped, so that the object is still read to its end (a damaged backup is still called damaged).
///
/// # Errors
/// [`StreamError::Cancelled`].
pub(super) async fn feed_psql(
    tx: &mut PsqlTransaction,
    sql_rx: &mut tokio::sync::mpsc::Receiver<Vec<u8>>,
    cancel: &CancellationToken,
) -> Result<Option<Outcome>, StreamError> {
    while let Some(sql) = recv_or_cancel(sql_rx, cancel).await? {
        if tx.is_broken() {
            continue;
        }
        tokio::select! {
            biased;
            () = cancel.cancelled() => return Err(StreamError::Cancelled),
            () = tx.write(&sql) => {}
        }
        if let Some(outcome) = tx.environment_failure().await {
            return Ok(Some(outcome));
        }
    }
    Ok(None)
}

/// Streams `key` through the integrity stages, feeding the SQL that the gate lets through (see
/// [`GateRules`]) to `psql` when given. Whether the result may be committed is the caller's
/// decision, from the returned report.
///
/// # Errors
/// As [`stream`].
pub(super) async fn feed(
    storage: &dyn Storage,
    key: &Key,
    identities: &[Identity],
    psql: Option<(&mut PsqlTransaction, GateRules)>,
    progress: Option<Progress>,
    cancel: &CancellationToken,
) -> Result<Fed, StreamError> {
    let identities = identities_for(key, identities)?;
    let (reader, announced) = get(storage, key, cancel).await?;
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(8);
    let decoder = tokio::task::spawn_blocking(move || decode(reader, progress, identities.as_deref(), &tx));
    let (mut psql, gate) = match psql {
        Some((p, rules)) => (Some(p), Some(rules)),
        None => (None, None),
    };
    let (sql_tx, mut sql_rx) = tokio::sync::mpsc::channel::<Vec<u8>>(8);
    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
    // PostgreSQL's parser recurses as deep as a statement nests (and refuses, with an error, past
    // its own limit): its thread gets a stack to match.
    std::thread::Builder::new()
        .name("pgvigil-gate".into())
        .stack_size(PARSER_STACK)
        .spawn(move || {
            let _ = done_tx.send(scan_stage(rx, &sql_tx, gate));
        })
        .map_err(|e| StorageError::other(format!("cannot start the scanning thread: {e}"), true))?;
    match psql.as_mut() {
        Some(p) => {
            if let Some(outcome) = feed_psql(p, &mut sql_rx, cancel).await? {
                return Ok(Fed::Stopped(outcome));
            }
        }
        // A check: nothing reaches psql, but the gate's output is taken all the same.
        None => while recv_or_cancel(&mut sql_rx, cancel).await?.is_some() {},
    }
    let scan = done_rx.await.map_err(|_| StorageError::other("the scanning thread failed", true))?;
    let decoded = decoder
        .await
        .map_err(|e| StorageError::other(format!("decompression task failed: {e}"), true))?;
    if scan.forbidden.is_some() {
        // The gate stopped the stream: the rest of the object was never read.
        return Ok(Fed::Read(Box::new(StreamReport {
            scan,
            ..StreamReport::default()
        })));
    }
    let decoded = match decoded {
        Ok(d) => d,
        Err(Stop::Broken(why)) => return Err(StorageError::other(format!("reading {key}: {why}"), true).into()),
    };
    read_to_the_end(key, decoded.size, announced)?;
    Ok(Fed::Read(Box::new(StreamReport {
        sha256: decoded.sha256,
        size: decoded.size,
        gzip_error: decoded.gzip_error,
        key_error: decoded.key_error,
        scan,
    })))
}
