//! Object storage: one trait with an S3 implementation and a local-directory one, an in-memory
//! store for tests ([`MemoryStorage`]) and a wrapper that fails on purpose ([`Faulty`]).
//!
//! Uploads are streams of unknown length fed through a [`BodySender`]. A body is only ever
//! published when the producer calls [`BodySender::finish`]; if it is dropped, fails, or the
//! cancellation token fires first, the upload is aborted and nothing is left behind. Every call
//! takes a cancellation token. Errors say whether a retry can help.
//!
//! Storage knows nothing of PostgreSQL or of what the bytes mean; it must not import `infra::pg`,
//! `records`, `pipeline` or `operator`.

mod body;
pub mod faulty;
mod key;
mod local;
mod memory;
pub mod parts;
mod preflight;
mod s3;

pub use body::{body_channel, BodyReceiver, BodySender, PartPlan};
pub use faulty::Faulty;
pub use key::Key;
pub use local::LocalStorage;
pub use memory::MemoryStorage;
pub use preflight::preflight;
pub use s3::S3Storage;

use crate::infra::config::{Backend, S3Config, StorageConfig};
use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use std::future::Future;
use std::sync::Arc;
use tokio::io::AsyncRead;
use tokio_util::sync::CancellationToken;

/// Why an upload was aborted. The side that failed returns its own error; this says only which
/// side stopped, for the other one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Abort {
    /// The producer reported a failure ([`body::BodySender::fail`]).
    #[error("the producer of the body failed")]
    ProducerFailed,
    /// The producer went away without finishing the body.
    #[error("the producer stopped before the end of the stream")]
    ProducerGone,
    /// The upload stopped taking the body (its own error says why).
    #[error("the upload stopped")]
    UploadStopped,
}

/// Errors from a storage backend, classified for callers that branch on them.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The object does not exist.
    #[error("object {0} does not exist")]
    NotFound(String),
    /// The operation was cancelled (shutdown).
    #[error("cancelled")]
    Cancelled,
    /// The producer of an upload stopped or reported an error, or the upload stopped under the
    /// producer; nothing was published.
    #[error("upload aborted: {0}")]
    Aborted(Abort),
    /// A conditional write found the object not in the expected state (it exists, or it changed).
    #[error("{0} was changed by someone else")]
    PreconditionFailed(String),
    /// The stream outgrew what the chosen part size allows (10,000 parts).
    #[error("upload is larger than {limit} bytes, the most that {part_size}-byte parts allow; set S3_PART_SIZE_MB higher")]
    TooLarge {
        /// Largest object the part size allows.
        limit: u64,
        /// Part size in use.
        part_size: u64,
    },
    /// The store refused to delete (a bucket policy without `s3:DeleteObject`, object lock, a
    /// read-only directory). Backups can still be written; retention cannot delete.
    #[error("{0}: deletes are not allowed here (the bucket policy must allow s3:DeleteObject on the prefix)")]
    DeleteDenied(String),
    /// An object larger than anything pgvigil writes under its name (read back with a cap).
    #[error("{key} is larger than any object pgvigil writes there ({limit} bytes)")]
    Oversized {
        /// The object.
        key: String,
        /// The cap it passed.
        limit: u64,
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

    /// Whether a record read back is there but cannot be used (it is not what pgvigil writes, or
    /// larger than anything it writes), as opposed to storage failing to answer.
    pub fn spoils_the_record(&self) -> bool {
        matches!(
            self,
            StorageError::Backend { retryable: false, .. } | StorageError::Oversized { .. }
        )
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
    /// The store's version tag of the content (S3's ETag), for conditional writes.
    pub etag: Option<String>,
}

/// The condition of a conditional write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Condition {
    /// Only if the object does not exist (`If-None-Match: *`).
    Absent,
    /// Only if the object is still at this version (`If-Match: <etag>`).
    Matches(String),
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
    /// Expected size (see [`parts::expected_backup_size`]), used to choose one part size for the
    /// whole upload.
    pub expected_size: Option<u64>,
    /// Use a multipart upload even for a small body (the self-test exercises that path).
    pub force_multipart: bool,
    /// Smallest part size to use (raised after an upload outgrew its parts).
    pub min_part_size: u64,
    /// Object lock: written to stay, unchangeable, until this time (with `S3_OBJECT_LOCK_DAYS`;
    /// ignored by stores without object lock).
    pub retain_until: Option<chrono::DateTime<chrono::Utc>>,
    /// The body is already whole in memory (manifests, records): parts are never streamed, as
    /// nothing would end the body where a streamed part ends.
    pub whole: bool,
}

/// A readable object body. Reading it fails with an I/O error when the download breaks.
pub type ObjectReader = Box<dyn AsyncRead + Send + Unpin>;

/// Storage of backups and metadata.
#[async_trait]
pub trait Storage: Send + Sync + std::fmt::Debug {
    /// Uploads a stream. The object becomes visible only when the body was finished and fully
    /// stored; on any error or cancellation nothing is published and partial state is cleaned up.
    ///
    /// # Errors
    /// [`StorageError`]; `Aborted` when the producer failed.
    async fn put(&self, key: &Key, body: BodyReceiver, opts: PutOptions, cancel: &CancellationToken) -> Result<PutResult>;

    /// Opens an object for streaming reads; returns the reader and the object's length as the
    /// store announced it.
    ///
    /// # Errors
    /// `NotFound` when missing.
    async fn get(&self, key: &Key, cancel: &CancellationToken) -> Result<(ObjectReader, u64)>;

    /// Opens `length` bytes of an object from `offset` (a ranged GET); reading fails or ends
    /// early when the object is shorter.
    ///
    /// # Errors
    /// `NotFound` when missing.
    async fn get_range(&self, key: &Key, offset: u64, length: u64, cancel: &CancellationToken) -> Result<ObjectReader>;

    /// Metadata of one object, `None` when missing.
    ///
    /// # Errors
    /// Backend errors.
    async fn head(&self, key: &Key, cancel: &CancellationToken) -> Result<Option<ObjectMeta>>;

    /// Every object whose key starts with `prefix`, in key order.
    ///
    /// # Errors
    /// Backend errors.
    async fn list(&self, prefix: &str, cancel: &CancellationToken) -> Result<Vec<ObjectMeta>>;

    /// Writes a small object only if `condition` holds, atomically on stores that support
    /// conditional writes; returns the new version tag.
    ///
    /// # Errors
    /// [`StorageError::PreconditionFailed`] when the condition does not hold.
    async fn put_if(&self, key: &Key, data: Bytes, condition: &Condition, cancel: &CancellationToken) -> Result<String>;

    /// Deletes objects; missing ones are not an error.
    ///
    /// # Errors
    /// Backend errors, naming the keys that could not be deleted.
    async fn delete_many(&self, keys: &[Key], cancel: &CancellationToken) -> Result<()>;

    /// Whether the bucket was created with object lock (`None`: the store has no such notion).
    ///
    /// # Errors
    /// Backend errors other than "no object lock configuration".
    async fn object_lock_enabled(&self, _cancel: &CancellationToken) -> Result<Option<bool>> {
        Ok(None)
    }

    /// Server-side copy.
    ///
    /// # Errors
    /// `NotFound` when the source is missing.
    async fn copy(&self, from: &Key, to: &Key, cancel: &CancellationToken) -> Result<()>;

    /// Keys of uncommitted multipart uploads (partial files, locally) under a prefix.
    ///
    /// # Errors
    /// Backend errors.
    async fn pending_uploads(&self, prefix: &str, cancel: &CancellationToken) -> Result<Vec<String>>;

    /// Aborts the uncommitted uploads of backup objects (`backup_….sql.gz[.age]`) right under a
    /// prefix, started more than a day ago (left by a crash or an outage during an earlier
    /// abort); another tool's uploads are left alone. Returns how many were removed.
    ///
    /// # Errors
    /// Backend errors.
    async fn abort_pending(&self, prefix: &str, cancel: &CancellationToken) -> Result<usize>;

    /// A short description for logs (`s3://bucket` or `file:///dir`).
    fn describe(&self) -> String;
}

/// Shared handle to a storage backend.
pub type DynStorage = Arc<dyn Storage>;

/// Runs a storage operation unless `cancel` fires first.
///
/// # Errors
/// The operation's error, or [`StorageError::Cancelled`].
pub(crate) async fn or_cancel<T>(cancel: &CancellationToken, op: impl Future<Output = Result<T>>) -> Result<T> {
    tokio::select! {
        biased;
        () = cancel.cancelled() => Err(StorageError::Cancelled),
        r = op => r,
    }
}

/// Builds the backend selected by the configuration.
///
/// # Errors
/// When the S3 client cannot be configured or the local directory cannot be created.
pub async fn connect(cfg: &StorageConfig) -> Result<DynStorage> {
    Ok(match &cfg.backend {
        Backend::S3(s3cfg) => {
            let st = S3Storage::new(s3cfg).await?;
            match st.bucket_region().await {
                Some(region) => {
                    tracing::warn!(
                        "the bucket {} answers from region {region}, not {} (from {}): using {region}; set S3_REGION={region} to say so",
                        s3cfg.bucket,
                        s3cfg.region,
                        s3cfg.region_from
                    );
                    let fixed = S3Config { region, ..s3cfg.clone() };
                    Arc::new(S3Storage::new(&fixed).await?)
                }
                None => Arc::new(st),
            }
        }
        Backend::Local { dir } => Arc::new(LocalStorage::new(dir)?),
    })
}

/// Builds the backend and runs the self-test ([`preflight`]) against `list_prefix` and `probe`.
///
/// # Errors
/// The first failing step, as one plain sentence.
pub async fn connect_checked(cfg: &StorageConfig, list_prefix: &str, probe: &Key, cancel: &CancellationToken) -> Result<DynStorage> {
    let st = connect(cfg).await?;
    preflight(st.as_ref(), list_prefix, probe, cancel).await?;
    Ok(st)
}

/// Checks that the store can keep the object lock the settings ask for (the backend's own check;
/// only S3 has one), for the backup service at start.
///
/// # Errors
/// When it cannot, in one sentence saying what to do; storage errors.
pub async fn check_object_lock(cfg: &StorageConfig, st: &dyn Storage, cancel: &CancellationToken) -> Result<()> {
    match &cfg.backend {
        Backend::S3(s3) => s3::check_object_lock(s3, st, cancel).await,
        _ => Ok(()),
    }
}

/// The store's clock minus ours, in seconds, from the modification time the store gives a probe
/// object written now (`None` when the store does not say). Stores report whole seconds.
///
/// # Errors
/// Storage errors.
pub async fn clock_skew(storage: &dyn Storage, probe: &Key, cancel: &CancellationToken) -> Result<Option<i64>> {
    let before = Utc::now();
    put_bytes(storage, probe, Bytes::from_static(b"pgvigil clock probe"), cancel).await?;
    let after = Utc::now();
    let theirs = storage.head(probe, cancel).await?.and_then(|m| m.last_modified);
    // Best effort: where deletes are refused the answer is still good (the self-test warned).
    let _ = storage.delete_many(std::slice::from_ref(probe), cancel).await;
    Ok(theirs.map(|t| {
        let ours = before + (after - before) / 2;
        (t - ours).num_seconds()
    }))
}

/// Whether the store honours conditional writes (`If-None-Match: *`), which keep two backup
/// services on one prefix apart; some S3-compatible stores ignore the header.
///
/// # Errors
/// Storage errors.
pub async fn conditional_writes_work(storage: &dyn Storage, probe: &Key, cancel: &CancellationToken) -> Result<bool> {
    let _ = storage.delete_many(std::slice::from_ref(probe), cancel).await;
    storage.put_if(probe, Bytes::from_static(b"1"), &Condition::Absent, cancel).await?;
    let second = storage.put_if(probe, Bytes::from_static(b"2"), &Condition::Absent, cancel).await;
    let _ = storage.delete_many(std::slice::from_ref(probe), cancel).await;
    match second {
        Err(StorageError::PreconditionFailed(_)) => Ok(true),
        Ok(_) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Stores a small in-memory object.
///
/// # Errors
/// As [`Storage::put`].
pub async fn put_bytes(storage: &dyn Storage, key: &Key, data: Bytes, cancel: &CancellationToken) -> Result<()> {
    put_bytes_with(storage, key, data, PutOptions::default(), cancel).await
}

/// Stores a small in-memory object with explicit options.
///
/// # Errors
/// As [`Storage::put`].
pub async fn put_bytes_with(storage: &dyn Storage, key: &Key, data: Bytes, opts: PutOptions, cancel: &CancellationToken) -> Result<()> {
    let opts = PutOptions { whole: true, ..opts };
    let (tx, rx) = body_channel(2);
    let producer = async move {
        if tx.send(data).await.is_ok() {
            tx.finish().await;
        }
    };
    let (_, res) = tokio::join!(producer, storage.put(key, rx, opts, cancel));
    res.map(|_| ())
}

/// Most bytes read from any of pgvigil's records (manifests, verification and failure records,
/// holds, policies): what is read back from storage is untrusted, and memory stays bounded.
pub const MAX_RECORD: u64 = 64 * 1024 * 1024;
/// Most bytes read from a small object (a lease, a probe).
pub const MAX_SMALL: u64 = 1024 * 1024;

/// Reads a whole (small) object into memory, at most `limit` bytes: a larger object is refused
/// without reading more (memory grows with what actually arrives, never with what the store
/// announces).
///
/// # Errors
/// As [`Storage::get`], plus read errors (retryable: the download broke), and an object larger
/// than `limit` (not retryable).
pub async fn get_bytes(storage: &dyn Storage, key: &Key, limit: u64, cancel: &CancellationToken) -> Result<Vec<u8>> {
    use tokio::io::AsyncReadExt;
    let (r, size) = storage.get(key, cancel).await?;
    if size > limit {
        return Err(StorageError::Oversized {
            key: key.to_string(),
            limit,
        });
    }
    let mut buf = Vec::with_capacity(size.min(1 << 20) as usize);
    or_cancel(cancel, async {
        r.take(limit.saturating_add(1))
            .read_to_end(&mut buf)
            .await
            .map_err(|e| StorageError::other(format!("reading {key}: {e}"), true))
    })
    .await?;
    if buf.len() as u64 > limit {
        return Err(StorageError::Oversized {
            key: key.to_string(),
            limit,
        });
    }
    Ok(buf)
}
