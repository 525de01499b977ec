//! A store in memory, with the same contract as the others (the storage suite runs against it):
//! an upload becomes visible only when its body finished, conditional writes compare version
//! tags, listings are in key order. For fast tests of what sits on top of storage (catalog,
//! retention, leases), and with [`super::Faulty`] around it, of how that copes with a failing store.

use super::{or_cancel, BodyReceiver, Condition, Key, ObjectMeta, ObjectReader, PutOptions, PutResult, Result, Storage, StorageError};
use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use tokio_util::sync::CancellationToken;

/// One stored object.
#[derive(Debug, Clone)]
struct Object {
    data: Bytes,
    version: u64,
    modified: DateTime<Utc>,
}

/// The store.
#[derive(Debug, Default)]
pub struct MemoryStorage {
    objects: Mutex<BTreeMap<String, Object>>,
    versions: AtomicU64,
}

impl MemoryStorage {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn objects(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Object>> {
        self.objects.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn store(&self, key: &Key, data: Bytes) -> String {
        let version = self.versions.fetch_add(1, Ordering::Relaxed) + 1;
        self.objects().insert(
            key.to_string(),
            Object {
                data,
                version,
                modified: Utc::now(),
            },
        );
        version.to_string()
    }

    fn meta(key: &str, o: &Object) -> ObjectMeta {
        ObjectMeta {
            key: key.to_string(),
            size: o.data.len() as u64,
            last_modified: Some(o.modified),
            etag: Some(o.version.to_string()),
        }
    }
}

#[async_trait]
impl Storage for MemoryStorage {
    async fn put(&self, key: &Key, mut body: BodyReceiver, _opts: PutOptions, cancel: &CancellationToken) -> Result<PutResult> {
        let mut data = Vec::new();
        while let Some(chunk) = body.next_or_cancel(cancel).await? {
            data.extend_from_slice(&chunk);
        }
        let size = data.len() as u64;
        self.store(key, data.into());
        Ok(PutResult { size, parts: 1 })
    }

    async fn get(&self, key: &Key, _cancel: &CancellationToken) -> Result<(ObjectReader, u64)> {
        let data = self
            .objects()
            .get(key.as_str())
            .map(|o| o.data.clone())
            .ok_or_else(|| StorageError::NotFound(key.to_string()))?;
        let len = data.len() as u64;
        Ok((Box::new(std::io::Cursor::new(data)), len))
    }

    async fn get_range(&self, key: &Key, offset: u64, length: u64, _cancel: &CancellationToken) -> Result<ObjectReader> {
        let data = self
            .objects()
            .get(key.as_str())
            .map(|o| o.data.clone())
            .ok_or_else(|| StorageError::NotFound(key.to_string()))?;
        let start = offset.min(data.len() as u64) as usize;
        let end = offset.saturating_add(length).min(data.len() as u64) as usize;
        Ok(Box::new(std::io::Cursor::new(data.slice(start..end))))
    }

    async fn head(&self, key: &Key, _cancel: &CancellationToken) -> Result<Option<ObjectMeta>> {
        Ok(self.objects().get(key.as_str()).map(|o| Self::meta(key.as_str(), o)))
    }

    async fn list(&self, prefix: &str, cancel: &CancellationToken) -> Result<Vec<ObjectMeta>> {
        or_cancel(cancel, async {
            Ok(self
                .objects()
                .range(prefix.to_string()..)
                .take_while(|(k, _)| k.starts_with(prefix))
                .map(|(k, o)| Self::meta(k, o))
                .collect())
        })
        .await
    }

    async fn put_if(&self, key: &Key, data: Bytes, condition: &Condition, _cancel: &CancellationToken) -> Result<String> {
        // Checked and written under one lock: atomic, as the contract asks.
        let mut objects = self.objects();
        let current = objects.get(key.as_str()).map(|o| o.version.to_string());
        let holds = match condition {
            Condition::Absent => current.is_none(),
            Condition::Matches(v) => current.as_deref() == Some(v.as_str()),
        };
        if !holds {
            return Err(StorageError::PreconditionFailed(key.to_string()));
        }
        let version = self.versions.fetch_add(1, Ordering::Relaxed) + 1;
        objects.insert(
            key.to_string(),
            Object {
                data,
                version,
                modified: Utc::now(),
            },
        );
        Ok(version.to_string())
    }

    async fn delete_many(&self, keys: &[Key], cancel: &CancellationToken) -> Result<()> {
        if cancel.is_cancelled() {
            return Err(StorageError::Cancelled);
        }
        let mut objects = self.objects();
        for key in keys {
            objects.remove(key.as_str());
        }
        Ok(())
    }

    async fn copy(&self, from: &Key, to: &Key, _cancel: &CancellationToken) -> Result<()> {
        let data = self
            .objects()
            .get(from.as_str())
            .map(|o| o.data.clone())
            .ok_or_else(|| StorageError::NotFound(from.to_string()))?;
        self.store(to, data);
        Ok(())
    }

    async fn pending_uploads(&self, _prefix: &str, _cancel: &CancellationToken) -> Result<Vec<String>> {
        // An upload lives in the task that makes it: nothing is left pending by a failed one.
        Ok(Vec::new())
    }

    async fn abort_pending(&self, _prefix: &str, _cancel: &CancellationToken) -> Result<usize> {
        Ok(0)
    }

    fn describe(&self) -> String {
        "memory://".into()
    }
}
