//! Object storage: one trait with an S3 implementation and a local-directory one.
//!
//! Uploads are streams of unknown length fed through a [`BodySender`]. A body is only ever
//! published when the producer calls [`BodySender::finish`]; if it is dropped, fails, or the
//! cancellation token fires first, the upload is aborted and nothing is left behind.

mod local;
mod preflight;
mod s3;

pub use local::LocalStorage;
pub use preflight::preflight;
pub use s3::S3Storage;

use crate::config::{Backend, StorageConfig};
use crate::keys::Key;
use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use std::sync::Arc;
use tokio::io::AsyncRead;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Errors from a storage backend, classified for callers that branch on them.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The object does not exist.
    #[error("object {0} does not exist")]
    NotFound(String),
    /// The operation was cancelled (shutdown).
    #[error("cancelled")]
    Cancelled,
    /// The producer of an upload stopped or reported an error; the upload was aborted.
    #[error("upload aborted: {0}")]
    Aborted(String),
    /// The stream outgrew what the chosen part size allows (10,000 parts).
    #[error("upload is larger than {limit} bytes, the most that {part_size}-byte parts allow; set S3_PART_SIZE_MB higher")]
    TooLarge {
        /// Largest object the part size allows.
        limit: u64,
        /// Part size in use.
        part_size: u64,
    },
    /// Anything else, with a plain description and whether retrying later can help.
    #[error("{message}")]
    Backend {
        /// Plain description (never contains credentials).
        message: String,
        /// True for outages, timeouts and throttling; false for denied access, missing bucket, etc.
        retryable: bool,
    },
}

impl StorageError {
    /// Whether a later retry may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, StorageError::Backend { retryable: true, .. })
    }

    pub(crate) fn other(message: impl Into<String>, retryable: bool) -> Self {
        StorageError::Backend {
            message: message.into(),
            retryable,
        }
    }
}

/// Result alias for storage calls.
pub type Result<T, E = StorageError> = std::result::Result<T, E>;

/// What a listing or `head` reports about an object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectMeta {
    /// Full key.
    pub key: String,
    /// Size in bytes.
    pub size: u64,
    /// Last modification time as reported by the store.
    pub last_modified: Option<DateTime<Utc>>,
}

/// Result of a completed upload.
#[derive(Debug, Clone)]
pub struct PutResult {
    /// Bytes stored.
    pub size: u64,
    /// Number of multipart parts (1 for a single request).
    pub parts: u32,
}

/// Options for one upload.
#[derive(Debug, Clone, Copy, Default)]
pub struct PutOptions {
    /// Expected size (e.g. the previous backup's), used to choose one part size for the whole upload.
    pub expected_size: Option<u64>,
    /// Use a multipart upload even for a small body (the self-test exercises that path).
    pub force_multipart: bool,
}

/// A readable object body.
pub type ObjectReader = Box<dyn AsyncRead + Send + Unpin>;

enum BodyMsg {
    Data(Bytes),
    Finish,
    Fail(String),
}

/// Producer side of an upload body.
#[derive(Debug)]
pub struct BodySender {
    /// Channel to the uploader; bounded, so a slow upload slows the producer.
    tx: mpsc::Sender<BodyMsg>,
}

/// Consumer side of an upload body, handed to [`Storage::put`].
pub struct BodyReceiver {
    /// Channel from the producer.
    rx: mpsc::Receiver<BodyMsg>,
    /// Set once `Finish` was seen, after which the receiver yields `None`.
    finished: bool,
}

impl std::fmt::Debug for BodyReceiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BodyReceiver").field("finished", &self.finished).finish()
    }
}

/// A bounded body channel holding at most `capacity` chunks in flight.
pub fn body_channel(capacity: usize) -> (BodySender, BodyReceiver) {
    let (tx, rx) = mpsc::channel(capacity.max(1));
    (BodySender { tx }, BodyReceiver { rx, finished: false })
}

impl BodySender {
    /// Sends one chunk; waits while the uploader is behind.
    ///
    /// # Errors
    /// When the uploader has already stopped (its error is reported by `put`).
    pub async fn send(&self, data: Bytes) -> Result<(), ()> {
        self.tx.send(BodyMsg::Data(data)).await.map_err(|_| ())
    }

    /// Marks the body complete: only now may the upload be published.
    pub async fn finish(self) {
        let _ = self.tx.send(BodyMsg::Finish).await;
    }

    /// Aborts the upload with a reason.
    pub async fn fail(self, reason: impl Into<String>) {
        let _ = self.tx.send(BodyMsg::Fail(reason.into())).await;
    }
}

impl BodyReceiver {
    /// Next chunk; `Ok(None)` only after an explicit finish.
    ///
    /// # Errors
    /// [`StorageError::Aborted`] when the producer failed or went away without finishing.
    pub async fn next(&mut self) -> Result<Option<Bytes>> {
        if self.finished {
            return Ok(None);
        }
        match self.rx.recv().await {
            Some(BodyMsg::Data(b)) => Ok(Some(b)),
            Some(BodyMsg::Finish) => {
                self.finished = true;
                Ok(None)
            }
            Some(BodyMsg::Fail(reason)) => Err(StorageError::Aborted(reason)),
            None => Err(StorageError::Aborted("the producer stopped before the end of the stream".into())),
        }
    }

    /// Next chunk, or [`StorageError::Cancelled`] when the token fires first.
    ///
    /// # Errors
    /// As [`BodyReceiver::next`], plus cancellation.
    pub async fn next_or_cancel(&mut self, cancel: &CancellationToken) -> Result<Option<Bytes>> {
        tokio::select! {
            biased;
            () = cancel.cancelled() => Err(StorageError::Cancelled),
            r = self.next() => r,
        }
    }
}

/// Storage of backups and metadata.
#[async_trait]
pub trait Storage: Send + Sync + std::fmt::Debug {
    /// Uploads a stream. The object becomes visible only when the body was finished and fully
    /// stored; on any error or cancellation nothing is published and partial state is cleaned up.
    ///
    /// # Errors
    /// [`StorageError`]; `Aborted` when the producer failed.
    async fn put(&self, key: &Key, body: BodyReceiver, opts: PutOptions, cancel: &CancellationToken) -> Result<PutResult>;

    /// Opens an object for streaming reads.
    ///
    /// # Errors
    /// `NotFound` when missing.
    async fn get(&self, key: &Key) -> Result<(ObjectReader, u64)>;

    /// Metadata of one object, `None` when missing.
    ///
    /// # Errors
    /// Backend errors.
    async fn head(&self, key: &Key) -> Result<Option<ObjectMeta>>;

    /// Every object whose key starts with `prefix`, in key order.
    ///
    /// # Errors
    /// Backend errors.
    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>>;

    /// Deletes objects; missing ones are not an error.
    ///
    /// # Errors
    /// Backend errors, naming the keys that could not be deleted.
    async fn delete_many(&self, keys: &[Key]) -> Result<()>;

    /// Server-side copy.
    ///
    /// # Errors
    /// `NotFound` when the source is missing.
    async fn copy(&self, from: &Key, to: &Key) -> Result<()>;

    /// Keys of uncommitted multipart uploads (partial files, locally) under a prefix.
    ///
    /// # Errors
    /// Backend errors.
    async fn pending_uploads(&self, prefix: &str) -> Result<Vec<String>>;

    /// Aborts every uncommitted upload under a prefix (left by a crash or an outage during an
    /// earlier abort). Returns how many were removed.
    ///
    /// # Errors
    /// Backend errors.
    async fn abort_pending(&self, prefix: &str) -> Result<usize>;

    /// A short description for logs (`s3://bucket` or `file:///dir`).
    fn describe(&self) -> String;
}

/// Shared handle to a storage backend.
pub type DynStorage = Arc<dyn Storage>;

/// Builds the backend selected by the configuration.
///
/// # Errors
/// When the S3 client cannot be configured or the local directory cannot be created.
pub async fn connect(cfg: &StorageConfig) -> Result<DynStorage> {
    Ok(match &cfg.backend {
        Backend::S3(s3cfg) => Arc::new(S3Storage::new(s3cfg).await?),
        Backend::Local { dir } => Arc::new(LocalStorage::new(dir)?),
    })
}

/// Stores a small in-memory object.
///
/// # Errors
/// As [`Storage::put`].
pub async fn put_bytes(storage: &dyn Storage, key: &Key, data: Bytes) -> Result<()> {
    let (tx, rx) = body_channel(2);
    let cancel = CancellationToken::new();
    let producer = async move {
        if tx.send(data).await.is_ok() {
            tx.finish().await;
        }
    };
    let (_, res) = tokio::join!(producer, storage.put(key, rx, PutOptions::default(), &cancel));
    res.map(|_| ())
}

/// Reads a whole (small) object into memory.
///
/// # Errors
/// As [`Storage::get`], plus read errors.
pub async fn get_bytes(storage: &dyn Storage, key: &Key) -> Result<Vec<u8>> {
    use tokio::io::AsyncReadExt;
    let (mut r, size) = storage.get(key).await?;
    let mut buf = Vec::with_capacity(size.min(64 << 20) as usize);
    r.read_to_end(&mut buf)
        .await
        .map_err(|e| StorageError::other(format!("reading {key}: {e}"), true))?;
    Ok(buf)
}

/// Smallest part S3 accepts (except the last).
pub const MIN_PART_SIZE: u64 = 5 * 1024 * 1024;
/// Default part size when nothing is known about the size.
pub const DEFAULT_PART_SIZE: u64 = 16 * 1024 * 1024;
/// S3's limit on parts per upload.
pub const MAX_PARTS: u64 = 10_000;

/// Chooses one part size for a whole upload so that a stream four times the expected size still
/// fits in 9,000 parts, rounded up to whole MiB.
pub fn choose_part_size(expected: Option<u64>, fixed: Option<u64>) -> u64 {
    if let Some(f) = fixed {
        return f.max(MIN_PART_SIZE);
    }
    let needed = expected.map_or(0, |e| e.saturating_mul(4) / 9_000 + 1);
    let mib = 1024 * 1024;
    let size = needed.max(DEFAULT_PART_SIZE).div_ceil(mib) * mib;
    size.min(5 * 1024 * mib)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn part_size_keeps_large_dumps_under_the_part_limit() {
        let mib = 1024 * 1024;
        let cases = [
            (None, None, 16 * mib),
            (Some(0), None, 16 * mib),
            (Some(10 * mib), None, 16 * mib),
            (None, Some(8 * mib), 8 * mib),
            (None, Some(mib), 5 * mib),
        ];
        for (expected, fixed, want) in cases {
            assert_eq!(choose_part_size(expected, fixed), want, "{expected:?} {fixed:?}");
        }
        for tb in [1u64, 2, 5] {
            let expected = tb << 40;
            let p = choose_part_size(Some(expected), None);
            assert!(expected * 4 / p < 9_001, "{tb} TiB -> {p}");
            assert_eq!(p % mib, 0);
        }
    }

    #[tokio::test]
    async fn a_body_dropped_without_finish_is_an_abort() {
        let (tx, mut rx) = body_channel(4);
        tx.send(Bytes::from_static(b"abc")).await.unwrap();
        drop(tx);
        assert_eq!(rx.next().await.unwrap().unwrap(), Bytes::from_static(b"abc"));
        assert!(matches!(rx.next().await, Err(StorageError::Aborted(_))));
    }
}
