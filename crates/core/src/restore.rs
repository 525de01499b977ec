//! Streaming a backup out of storage: download → SHA-256 and length → multi-member gunzip →
//! dump scan → (optionally) `psql`. Integrity is decided *before* psql's stdin is closed, so a
//! corrupt or truncated object is never committed: psql is killed instead, which rolls back.

use crate::dumpscan::{DumpScanner, ScanResult};
use crate::keys::Key;
use crate::manifest::Manifest;
use crate::pg::{restore as psql, OwnedChild, PgError, Tool};
use crate::secret::DbUrl;
use crate::storage::{Storage, StorageError};
use bytes::Bytes;
use sha2::{Digest, Sha256};
use std::io::Read;
use tokio::io::AsyncWriteExt;
use tokio_util::io::SyncIoBridge;
use tokio_util::sync::CancellationToken;

/// What streaming an object found.
#[derive(Debug, Clone, Default)]
pub struct StreamReport {
    /// SHA-256 of the bytes downloaded.
    pub sha256: String,
    /// Bytes downloaded.
    pub size: u64,
    /// The gzip layer's error (bad CRC or length, corrupt data, early end), if any.
    pub gzip_error: Option<String>,
    /// What the SQL contained.
    pub scan: ScanResult,
}

/// Why streaming could not be completed (not a verdict on the backup).
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    /// Storage unavailable or object missing.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// Shutdown.
    #[error("cancelled")]
    Cancelled,
    /// psql could not be fed or failed to start.
    #[error(transparent)]
    Pg(#[from] PgError),
}

/// Bytes downloaded so far, shared with whoever shows progress.
pub type Progress = std::sync::Arc<std::sync::atomic::AtomicU64>;

/// Reader wrapper that hashes and counts what passes through.
struct Hashing<R> {
    inner: R,
    sha: Sha256,
    size: u64,
    progress: Option<Progress>,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.sha.update(&buf[..n]);
        self.size += n as u64;
        if let Some(p) = &self.progress {
            p.store(self.size, std::sync::atomic::Ordering::Relaxed);
        }
        Ok(n)
    }
}

/// Chunk size handed from the decompressor to the consumer.
const CHUNK: usize = 256 * 1024;

/// Compares a stream report with the manifest; every disagreement is one reason.
pub fn integrity_problems(m: Option<&Manifest>, r: &StreamReport) -> Vec<String> {
    let mut problems = Vec::new();
    match m {
        None => problems.push("the manifest is missing: the backup did not complete or was not written by pgvigil".into()),
        Some(m) => {
            if r.size != m.size {
                problems.push(format!(
                    "object size {} bytes differs from the manifest's {} bytes (truncated or replaced)",
                    r.size, m.size
                ));
            }
            if r.sha256 != m.sha256 {
                problems.push("SHA-256 of the object differs from the manifest (the object is corrupted)".into());
            }
        }
    }
    if let Some(e) = &r.gzip_error {
        problems.push(format!("the gzip stream is damaged: {e}"));
    }
    if let Some(t) = &r.scan.open_copy {
        problems.push(format!("the dump ends inside the data of table {t}"));
    } else if !r.scan.complete {
        problems.push("the dump does not end with pg_dump's closing line (truncated)".into());
    }
    problems
}

/// Streams `key` through the integrity checks, feeding the SQL to `psql` when given. Returns
/// the report and whether it is intact; when `psql` is given and the object is not intact
/// (see [`integrity_problems`]), psql is killed before its input ends so nothing is committed.
///
/// # Errors
/// [`StreamError`] when storage or psql fail in a way that says nothing about the backup.
pub async fn stream(
    storage: &dyn Storage,
    key: &Key,
    mut psql: Option<&mut OwnedChild>,
    manifest: Option<&Manifest>,
    progress: Option<Progress>,
    cancel: &CancellationToken,
) -> Result<(StreamReport, bool), StreamError> {
    let (reader, _size) = storage.get(key).await?;
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Bytes>(8);
    let decoder = tokio::task::spawn_blocking(move || {
        let mut hashing = Hashing {
            inner: SyncIoBridge::new(reader),
            sha: Sha256::new(),
            size: 0,
            progress,
        };
        let mut gz_error = None;
        {
            let mut gz = flate2::read::MultiGzDecoder::new(&mut hashing);
            let mut buf = vec![0u8; CHUNK];
            loop {
                match gz.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => {
                        if tx.blocking_send(Bytes::copy_from_slice(&buf[..n])).is_err() {
                            return Err("consumer stopped".to_string());
                        }
                    }
                    Err(e) => {
                        gz_error = Some(e.to_string());
                        break;
                    }
                }
            }
        }
        // Read whatever follows a damaged member so the hash covers the whole object.
        let mut sink = vec![0u8; CHUNK];
        loop {
            match hashing.read(&mut sink) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) => return Err(format!("download failed: {e}")),
            }
        }
        Ok((hex::encode(hashing.sha.finalize()), hashing.size, gz_error))
    });
    let mut stdin = psql.as_mut().and_then(|p| p.take_stdin());
    let mut scanner = DumpScanner::new();
    let mut psql_broke = false;
    loop {
        let chunk = tokio::select! {
            biased;
            () = cancel.cancelled() => {
                if let Some(p) = psql.as_mut() { p.kill().await; }
                return Err(StreamError::Cancelled);
            }
            c = rx.recv() => c,
        };
        let Some(chunk) = chunk else { break };
        scanner.feed(&chunk);
        if let (Some(w), false) = (stdin.as_mut(), psql_broke) {
            if w.write_all(&chunk).await.is_err() {
                // psql stopped reading (it hit an error); its exit status says why.
                psql_broke = true;
            }
        }
    }
    let decoded = decoder
        .await
        .map_err(|e| StorageError::other(format!("decompression task failed: {e}"), true))?;
    let (sha256, size, gzip_error) = match decoded {
        Ok(v) => v,
        Err(e) => {
            if let Some(p) = psql.as_mut() {
                p.kill().await;
            }
            return Err(StorageError::other(format!("reading {key}: {e}"), true).into());
        }
    };
    let report = StreamReport {
        sha256,
        size,
        gzip_error,
        scan: scanner.finish(),
    };
    let ok = integrity_problems(manifest, &report).is_empty();
    if let Some(p) = psql.as_mut() {
        if ok {
            if let Some(mut w) = stdin.take() {
                let _ = w.shutdown().await;
            }
        } else {
            // Never let psql commit a damaged dump: kill it before its input ends.
            p.kill().await;
        }
    }
    drop(stdin);
    Ok((report, ok))
}

/// Streams `key` into a database with psql, committing only if the object is intact.
/// Returns the integrity problems (empty when intact) and psql's failure, if any.
///
/// # Errors
/// [`StreamError`] for storage/psql infrastructure problems.
pub async fn restore_into(
    storage: &dyn Storage,
    key: &Key,
    manifest: Option<&Manifest>,
    psql_tool: &Tool,
    target: &DbUrl,
    progress: Option<Progress>,
    cancel: &CancellationToken,
) -> Result<(Vec<String>, Option<String>), StreamError> {
    let mut child = psql::spawn(psql_tool, target)?;
    let (report, ok) = stream(storage, key, Some(&mut child), manifest, progress, cancel).await?;
    let problems = integrity_problems(manifest, &report);
    let psql_result = child.wait().await;
    // When the object was not intact psql was killed on purpose; the integrity problems explain it.
    let psql_failure = match psql_result {
        Err(f) if ok => Some(psql::explain(&f)),
        _ => None,
    };
    Ok((problems, psql_failure))
}
