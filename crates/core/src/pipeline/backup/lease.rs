//! One backup at a time per prefix. Two backup services pointed at the same prefix (a deploy that
//! overlaps, a copy-pasted configuration) must not interleave their uploads, manifests and
//! retention. Before a run, the service takes a lease: a small object in the metadata area,
//! created with `If-None-Match: *` and renewed with `If-Match: <version>`, that expires if its
//! holder dies. The loser says who holds it and waits for its next turn; a holder that loses its
//! lease (it stalled longer than the lease lasts) aborts its run.

use crate::infra::storage::{Condition, DynStorage, Key, StorageError};
use crate::records::keys::Layout;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// How long a lease lasts without renewal (also how long a crashed holder on another host blocks
/// the prefix).
pub const TTL: Duration = Duration::from_secs(120);
/// How often the holder renews it.
const RENEW_EVERY: Duration = Duration::from_secs(30);
/// A holder that could not renew for this long stops, before anyone may take the lease over.
const GIVE_UP_AFTER: Duration = Duration::from_secs(90);

/// What the lease object says.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Body {
    /// Who holds it.
    holder: String,
    /// Until when, unless renewed.
    expires_at: DateTime<Utc>,
    /// The holder's host name.
    #[serde(default)]
    host: String,
    /// The holder's process id on that host.
    #[serde(default)]
    pid: u32,
}

fn host() -> &'static str {
    static HOST: OnceLock<String> = OnceLock::new();
    HOST.get_or_init(|| {
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .unwrap_or_default()
            .trim()
            .to_string()
    })
}

/// This process's name as a lease holder: host, pid and a random part.
pub fn holder() -> &'static str {
    static HOLDER: OnceLock<String> = OnceLock::new();
    HOLDER.get_or_init(|| format!("{} pid {} ({:08x})", host(), std::process::id(), rand::random::<u32>()))
}

impl Body {
    /// Whether the holder is gone: its lease expired, or it ran on this host as a process that no
    /// longer exists (a service restarted after a crash need not wait for the lease to expire).
    fn is_stale(&self) -> bool {
        if self.expires_at <= Utc::now() {
            return true;
        }
        let here = !self.host.is_empty() && self.host == host();
        let mine = self.pid == std::process::id();
        here && self.pid != 0 && (mine || !std::path::Path::new(&format!("/proc/{}", self.pid)).exists())
    }
}

/// The lease is held by another backup service.
#[derive(Debug, Clone, thiserror::Error)]
#[error("another backup service ({holder}) is taking a backup under this prefix (its lease runs until {until}); this one waits for its next turn")]
pub struct Busy {
    /// Who holds it.
    pub holder: String,
    /// Until when.
    pub until: DateTime<Utc>,
}

/// A lease held by this process, renewed in the background until released.
#[derive(Debug)]
pub struct Lease {
    /// Where it lives.
    storage: DynStorage,
    /// Its key.
    key: Key,
    /// The version this process wrote last.
    version: Arc<Mutex<String>>,
    /// The renewing task.
    renewer: JoinHandle<()>,
}

fn body(expires_in: Duration) -> Result<Bytes, StorageError> {
    let b = Body {
        holder: holder().to_string(),
        expires_at: Utc::now() + chrono::Duration::from_std(expires_in).unwrap_or(chrono::Duration::minutes(2)),
        host: host().to_string(),
        pid: std::process::id(),
    };
    serde_json::to_vec(&b)
        .map(Bytes::from)
        .map_err(|e| StorageError::other(format!("encoding the lease: {e}"), false))
}

/// Takes the lease for `layout`'s prefix. When it is lost while held, `lost` is cancelled.
///
/// # Errors
/// `Ok(Err(Busy))` when another service holds it; storage errors.
pub async fn acquire(
    storage: &DynStorage,
    layout: &Layout,
    lost: CancellationToken,
    cancel: &CancellationToken,
) -> Result<Result<Lease, Busy>, StorageError> {
    let key = layout.lease();
    for _ in 0..3 {
        let condition = match storage.head(&key, cancel).await? {
            None => Condition::Absent,
            Some(meta) => {
                let version = meta.etag.unwrap_or_default();
                let current: Option<Body> =
                    match crate::infra::storage::get_bytes(storage.as_ref(), &key, crate::infra::storage::MAX_SMALL, cancel).await {
                        Ok(bytes) => serde_json::from_slice(&bytes).ok(),
                        Err(StorageError::NotFound(_)) => continue,
                        Err(e) => return Err(e),
                    };
                match current {
                    Some(b) if b.holder != holder() && !b.is_stale() => {
                        return Ok(Err(Busy {
                            holder: b.holder,
                            until: b.expires_at,
                        }))
                    }
                    // Ours, expired, or unreadable: take it over, if nobody else does first.
                    _ => Condition::Matches(version),
                }
            }
        };
        match storage.put_if(&key, body(TTL)?, &condition, cancel).await {
            Ok(version) => return Ok(Ok(Lease::start(storage.clone(), key, version, lost))),
            Err(StorageError::PreconditionFailed(_)) => continue,
            Err(e) => return Err(e),
        }
    }
    // Three races lost in a row: someone else is taking it right now.
    Ok(Err(Busy {
        holder: "another backup service".into(),
        until: Utc::now() + chrono::Duration::from_std(TTL).unwrap_or(chrono::Duration::minutes(2)),
    }))
}

/// Renews the lease at `key` from `version`: the new version, or why not.
async fn renew(storage: &DynStorage, key: &Key, version: &str) -> Result<String, StorageError> {
    storage
        .put_if(key, body(TTL)?, &Condition::Matches(version.to_string()), &CancellationToken::new())
        .await
}

impl Lease {
    fn start(storage: DynStorage, key: Key, version: String, lost: CancellationToken) -> Self {
        let version = Arc::new(Mutex::new(version));
        let (st, k, v) = (storage.clone(), key.clone(), version.clone());
        let renewer = tokio::spawn(async move {
            let mut renewed = tokio::time::Instant::now();
            loop {
                tokio::time::sleep(RENEW_EVERY).await;
                let current = v.lock().map(|g| g.clone()).unwrap_or_default();
                match renew(&st, &k, &current).await {
                    Ok(next) => {
                        renewed = tokio::time::Instant::now();
                        if let Ok(mut g) = v.lock() {
                            *g = next;
                        }
                    }
                    Err(StorageError::PreconditionFailed(_)) => {
                        tracing::error!("the backup lease was taken over by another backup service; this backup is aborted");
                        lost.cancel();
                        return;
                    }
                    // Storage trouble: try again, but stop before the lease can expire under us.
                    Err(e) if renewed.elapsed() >= GIVE_UP_AFTER => {
                        tracing::error!(error = %e, "the backup lease could not be renewed in time; this backup is aborted before another service may take over");
                        lost.cancel();
                        return;
                    }
                    Err(e) => tracing::warn!(error = %e, "could not renew the backup lease; trying again"),
                }
            }
        }.in_current_span());
        Self {
            storage,
            key,
            version,
            renewer,
        }
    }

    /// Proves the lease is still held, right before publishing: renews it now.
    ///
    /// # Errors
    /// [`StorageError::PreconditionFailed`] when another service took it over.
    pub async fn confirm(&self) -> Result<(), StorageError> {
        let current = self.version.lock().map(|g| g.clone()).unwrap_or_default();
        let next = renew(&self.storage, &self.key, &current).await?;
        if let Ok(mut g) = self.version.lock() {
            *g = next;
        }
        Ok(())
    }

    /// Gives the lease up (only if it is still ours), within a few seconds whatever storage does.
    pub async fn release(self) {
        self.renewer.abort();
        let never = CancellationToken::new();
        let ours = self.version.lock().map(|g| g.clone()).unwrap_or_default();
        let give_up = async {
            if let Ok(Some(meta)) = self.storage.head(&self.key, &never).await {
                if meta.etag.as_deref() == Some(ours.as_str()) {
                    let _ = self.storage.delete_many(std::slice::from_ref(&self.key), &never).await;
                }
            }
        };
        let _ = tokio::time::timeout(Duration::from_secs(5), give_up).await;
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.renewer.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::infra::storage::{put_bytes, LocalStorage};

    async fn store(body: &Body, st: &DynStorage, layout: &Layout) {
        let data = Bytes::from(serde_json::to_vec(body).unwrap());
        put_bytes(st.as_ref(), &layout.lease(), data, &CancellationToken::new())
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn a_live_holder_elsewhere_keeps_it_a_dead_or_expired_one_does_not() {
        let dir = std::env::temp_dir().join(format!("pgvigil-lease-{}", rand::random::<u64>()));
        let st: DynStorage = Arc::new(LocalStorage::new(&dir).unwrap());
        let layout = Layout::new("p");
        let never = CancellationToken::new();
        let later = Utc::now() + chrono::Duration::minutes(1);
        let other = |host: &str, pid: u32, expires_at| Body {
            holder: format!("{host} pid {pid} (abc)"),
            expires_at,
            host: host.into(),
            pid,
        };
        let cases = [
            ("a live holder on another host", other("elsewhere", 7, later), false),
            (
                "an expired holder",
                other("elsewhere", 7, Utc::now() - chrono::Duration::seconds(1)),
                true,
            ),
            ("a dead process on this host", other(host(), 999_999_999, later), true),
            (
                "an earlier run of this very process",
                other(host(), std::process::id(), later),
                true,
            ),
        ];
        for (name, body, taken) in cases {
            store(&body, &st, &layout).await;
            let got = acquire(&st, &layout, CancellationToken::new(), &never).await.unwrap();
            assert_eq!(got.is_ok(), taken, "{name}: {got:?}");
            if let Ok(lease) = got {
                lease.confirm().await.unwrap();
                lease.release().await;
                assert!(st.head(&layout.lease(), &never).await.unwrap().is_none(), "{name}: released");
            }
        }
        let _ = std::fs::remove_dir_all(dir);
    }

    #[tokio::test]
    async fn a_store_that_fails_gives_no_lease_and_a_takeover_is_seen_before_publishing() {
        use crate::infra::storage::faulty::{outage, Faulty, Op};
        let faulty = Arc::new(Faulty::new(Arc::new(crate::infra::storage::MemoryStorage::new())));
        let st: DynStorage = faulty.clone();
        let layout = Layout::new("p");
        let never = CancellationToken::new();
        faulty.fail(Op::PutIf, "lease", outage, Some(1));
        let r = acquire(&st, &layout, CancellationToken::new(), &never).await;
        assert!(matches!(&r, Err(e) if e.is_retryable()), "{r:?}");
        let lease = acquire(&st, &layout, CancellationToken::new(), &never).await.unwrap().unwrap();
        // Another service writes over it (as after a partition): confirming before publishing fails.
        put_bytes(st.as_ref(), &layout.lease(), Bytes::from_static(b"{}"), &never)
            .await
            .unwrap();
        assert!(matches!(lease.confirm().await, Err(StorageError::PreconditionFailed(_))));
        // Releasing leaves the other service's lease alone.
        lease.release().await;
        assert!(st.head(&layout.lease(), &never).await.unwrap().is_some());
    }
}
