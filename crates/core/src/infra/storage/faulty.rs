//! A wrapper that makes any store fail on purpose: the operations named, on the keys (or
//! prefixes) containing a given text, fail with a given error, a number of times or until
//! cleared; every call is counted. For tests of what pgvigil does when storage fails part-way
//! (retention deleting nothing, a catalog that cannot be listed, a lease that cannot be written).

use super::{BodyReceiver, Condition, DynStorage, Key, ObjectMeta, ObjectReader, PutOptions, PutResult, Result, Storage, StorageError};
use async_trait::async_trait;
use bytes::Bytes;
use std::collections::BTreeMap;
use std::sync::Mutex;
use tokio_util::sync::CancellationToken;

/// The operations a fault can be injected into.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Op {
    /// [`Storage::put`].
    Put,
    /// [`Storage::get`].
    Get,
    /// [`Storage::get_range`].
    GetRange,
    /// [`Storage::head`].
    Head,
    /// [`Storage::list`].
    List,
    /// [`Storage::put_if`].
    PutIf,
    /// [`Storage::delete_many`] (fails when any key matches).
    Delete,
    /// [`Storage::copy`] (matched against the destination).
    Copy,
}

/// One injected fault.
#[derive(Debug, Clone)]
struct Fault {
    op: Op,
    matching: String,
    error: fn(&str) -> StorageError,
    /// How many more times it fires (`None`: until cleared).
    times: Option<usize>,
}

/// A store that fails where it is told to.
#[derive(Debug)]
pub struct Faulty {
    inner: DynStorage,
    faults: Mutex<Vec<Fault>>,
    calls: Mutex<BTreeMap<Op, usize>>,
}

/// An outage: retryable.
pub fn outage(what: &str) -> StorageError {
    StorageError::other(format!("injected outage on {what}"), true)
}

/// Access denied: not retryable.
pub fn denied(what: &str) -> StorageError {
    StorageError::other(format!("injected access denied on {what}"), false)
}

impl Faulty {
    /// `inner`, failing nowhere yet.
    pub fn new(inner: DynStorage) -> Self {
        Self {
            inner,
            faults: Mutex::default(),
            calls: Mutex::default(),
        }
    }

    /// From now on, `op` on a key containing `matching` fails with `error` (`times`: that many
    /// times, `None`: until [`Faulty::clear`]).
    pub fn fail(&self, op: Op, matching: &str, error: fn(&str) -> StorageError, times: Option<usize>) {
        self.faults.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(Fault {
            op,
            matching: matching.to_string(),
            error,
            times,
        });
    }

    /// Removes every fault.
    pub fn clear(&self) {
        self.faults.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clear();
    }

    /// How many times `op` was called.
    pub fn calls(&self, op: Op) -> usize {
        self.calls
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&op)
            .copied()
            .unwrap_or(0)
    }

    /// Counts the call, and returns the error of the first fault that fires on it.
    fn check(&self, op: Op, keys: &[&str]) -> Result<()> {
        *self
            .calls
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .entry(op)
            .or_default() += 1;
        let mut faults = self.faults.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let hit = faults
            .iter_mut()
            .find(|f| f.op == op && f.times != Some(0) && keys.iter().any(|k| k.contains(&f.matching)));
        let Some(f) = hit else { return Ok(()) };
        if let Some(n) = f.times.as_mut() {
            *n -= 1;
        }
        Err((f.error)(keys.first().copied().unwrap_or_default()))
    }
}

#[async_trait]
impl Storage for Faulty {
    async fn put(&self, key: &Key, body: BodyReceiver, opts: PutOptions, cancel: &CancellationToken) -> Result<PutResult> {
        self.check(Op::Put, &[key.as_str()])?;
        self.inner.put(key, body, opts, cancel).await
    }

    async fn get(&self, key: &Key, cancel: &CancellationToken) -> Result<(ObjectReader, u64)> {
        self.check(Op::Get, &[key.as_str()])?;
        self.inner.get(key, cancel).await
    }

    async fn get_range(&self, key: &Key, offset: u64, length: u64, cancel: &CancellationToken) -> Result<ObjectReader> {
        self.check(Op::GetRange, &[key.as_str()])?;
        self.inner.get_range(key, offset, length, cancel).await
    }

    async fn head(&self, key: &Key, cancel: &CancellationToken) -> Result<Option<ObjectMeta>> {
        self.check(Op::Head, &[key.as_str()])?;
        self.inner.head(key, cancel).await
    }

    async fn list(&self, prefix: &str, cancel: &CancellationToken) -> Result<Vec<ObjectMeta>> {
        self.check(Op::List, &[prefix])?;
        self.inner.list(prefix, cancel).await
    }

    async fn put_if(&self, key: &Key, data: Bytes, condition: &Condition, cancel: &CancellationToken) -> Result<String> {
        self.check(Op::PutIf, &[key.as_str()])?;
        self.inner.put_if(key, data, condition, cancel).await
    }

    async fn delete_many(&self, keys: &[Key], cancel: &CancellationToken) -> Result<()> {
        let names: Vec<&str> = keys.iter().map(Key::as_str).collect();
        self.check(Op::Delete, &names)?;
        self.inner.delete_many(keys, cancel).await
    }

    async fn object_lock_enabled(&self, cancel: &CancellationToken) -> Result<Option<bool>> {
        self.inner.object_lock_enabled(cancel).await
    }

    async fn copy(&self, from: &Key, to: &Key, cancel: &CancellationToken) -> Result<()> {
        self.check(Op::Copy, &[to.as_str()])?;
        self.inner.copy(from, to, cancel).await
    }

    async fn pending_uploads(&self, prefix: &str, cancel: &CancellationToken) -> Result<Vec<String>> {
        self.inner.pending_uploads(prefix, cancel).await
    }

    async fn abort_pending(&self, prefix: &str, cancel: &CancellationToken) -> Result<usize> {
        self.inner.abort_pending(prefix, cancel).await
    }

    fn describe(&self) -> String {
        self.inner.describe()
    }
}
