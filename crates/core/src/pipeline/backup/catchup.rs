//! Catch-up between two destinations: when one misses a backup (it was down, or cut off as too
//! slow), the other records that it is owed it, and later copies it over. What is read from the source is untrusted like
//! anything read back from storage: a backup is copied only when its manifest names this very
//! backup, its object has exactly the size and SHA-256 the manifest records (checked on the way,
//! nothing is held whole), its saved roles match too, and, when the backup service signs, the
//! manifest carries this service's signature. A copy is published like a backup: the object and
//! the roles first, then the signature, the manifest last; a copy that fails is taken back.

use super::{take_back, update_latest, BackupContext};
use crate::infra::signing::{SigningKey, TrustedKeys};
use crate::infra::storage::{body_channel, get_bytes, put_bytes_with, Key, PutOptions, Storage, StorageError, MAX_RECORD, MAX_SMALL};
use crate::records::catalog::Catalog;
use crate::records::keys::{BackupId, Layout, SEALED};
use crate::records::manifest::{signed_for, Manifest};
use sha2::{Digest, Sha256};
use tokio::io::AsyncReadExt;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

/// What one catch-up did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Gap {
    /// Backups copied, oldest first.
    pub copied: Vec<BackupId>,
    /// Backups not copied because the source's copy cannot be trusted, and why.
    pub refused: Vec<(BackupId, String)>,
    /// The newest backup copied, when it is now the newest in the destination: its object key
    /// and whether it is encrypted (for the latest copy).
    pub newest_copied: Option<(Key, bool)>,
    /// Why catch-up could not run (a storage error; it is tried again after the next backup).
    pub error: Option<String>,
}

/// What to do with the backups `to` is owed: those to copy from `from` (oldest first), and
/// those already settled (`to` holds it after all, or `from` no longer does: nothing to copy),
/// whose records go.
pub fn plan(owed: &[BackupId], from: &Catalog, to: &Catalog) -> (Vec<BackupId>, Vec<BackupId>) {
    let holds = |c: &Catalog, id: &BackupId| c.backups.iter().any(|b| b.complete && b.id == *id);
    let (mut copy, mut settled): (Vec<BackupId>, Vec<BackupId>) = owed.iter().partition(|id| !holds(to, id) && holds(from, id));
    copy.sort();
    copy.dedup();
    settled.sort();
    settled.dedup();
    (copy, settled)
}

/// Records in the destinations that took backup `id` that `missed` (a destination name) is owed it.
///
/// # Errors
/// Storage errors.
pub async fn record_owed(
    stores: &[&dyn Storage],
    layout: &Layout,
    missed: &str,
    id: BackupId,
    cancel: &CancellationToken,
) -> Result<(), StorageError> {
    for st in stores {
        crate::infra::storage::put_bytes(*st, &layout.owed(missed, id), bytes::Bytes::from_static(b"{}"), cancel).await?;
    }
    Ok(())
}

/// Copies to `to` (named `to_name`) the backups it is owed, as recorded in `from`, each checked
/// on the way; with `own` (the backup service's signing key), only manifests it signed are
/// copied. A settled or refused record is removed (a refusal is reported once).
///
/// # Errors
/// Storage errors of either side (the next run tries again); a backup that cannot be trusted
/// is not an error but a [`Gap::refused`] entry.
pub async fn catch_up(
    from: &dyn Storage,
    to: &dyn Storage,
    to_name: &str,
    layout: &Layout,
    lock_days: Option<u32>,
    own: Option<&SigningKey>,
    cancel: &CancellationToken,
) -> Result<Gap, StorageError> {
    let owed: Vec<BackupId> = from
        .list(&layout.owed_prefix(to_name), cancel)
        .await?
        .iter()
        .filter_map(|o| layout.parse_owed(to_name, &o.key))
        .collect();
    let mut gap = Gap::default();
    if owed.is_empty() {
        return Ok(gap);
    }
    let (source, target) = (Catalog::load(from, layout, cancel).await?, Catalog::load(to, layout, cancel).await?);
    let trusted = match own.map(|k| TrustedKeys::parse(&k.public_base64())).transpose() {
        Ok(t) => t,
        Err(e) => return Err(StorageError::other(e, false)),
    };
    let newest_there = target.newest_complete().map(|b| b.id);
    let (copy, mut done) = plan(&owed, &source, &target);
    for id in copy {
        match copy_backup(from, to, layout, id, (trusted.as_ref(), lock_days), cancel).await? {
            Ok(key) => {
                if newest_there.is_none_or(|n| id > n) {
                    let sealed = key.as_str().ends_with(SEALED);
                    gap.newest_copied = Some((key, sealed));
                }
                gap.copied.push(id);
            }
            Err(why) => gap.refused.push((id, why)),
        }
        done.push(id);
    }
    let records: Vec<Key> = done.iter().map(|id| layout.owed(to_name, *id)).collect();
    from.delete_many(&records, cancel).await?;
    Ok(gap)
}

/// Copies one backup; `Ok(Err(why))` when the source's copy cannot be trusted.
async fn copy_backup(
    from: &dyn Storage,
    to: &dyn Storage,
    layout: &Layout,
    id: BackupId,
    (trusted, lock_days): (Option<&TrustedKeys>, Option<u32>),
    cancel: &CancellationToken,
) -> Result<Result<Key, String>, StorageError> {
    let manifest_bytes = match get_bytes(from, &layout.manifest(id), MAX_RECORD, cancel).await {
        Ok(b) => b,
        Err(StorageError::NotFound(_)) => return Ok(Err("its manifest is gone".into())),
        Err(e @ StorageError::Oversized { .. }) => return Ok(Err(e.to_string())),
        Err(e) => return Err(e),
    };
    let Ok(m) = serde_json::from_slice::<Manifest>(&manifest_bytes) else {
        return Ok(Err("its manifest is unreadable".into()));
    };
    let Some(key) = layout.objects(id).into_iter().find(|k| k.as_str() == m.key) else {
        return Ok(Err("its manifest names another object".into()));
    };
    let signature = match get_bytes(from, &layout.manifest_signature(id), MAX_SMALL, cancel).await {
        Ok(b) => Some(b),
        Err(StorageError::NotFound(_)) => None,
        Err(e @ StorageError::Oversized { .. }) => return Ok(Err(e.to_string())),
        Err(e) => return Err(e),
    };
    if let Some(trusted) = trusted {
        let text = signature.as_deref().map(String::from_utf8_lossy);
        if let Err(why) = trusted.verify(&manifest_bytes, text.as_deref(), &signed_for(&m.key)) {
            return Ok(Err(format!("its manifest is not signed by this backup service's key ({why})")));
        }
    }
    // The lock is the destination's own, never longer than its settings allow: the date in a
    // manifest read back from storage is not trusted.
    // (A date already past asks for no lock: stores refuse one.)
    let now = chrono::Utc::now();
    let retain_until = lock_days
        .map(|d| {
            let most = now + chrono::Duration::days(i64::from(d));
            m.locked_until.map_or(most, |t| t.min(most))
        })
        .filter(|t| *t > now + chrono::Duration::minutes(5));
    let opts = PutOptions {
        expected_size: Some(m.size),
        retain_until,
        whole: true,
        ..PutOptions::default()
    };
    let cleanup = CancellationToken::new();
    if let Err(why) = copy_object(from, to, &key, m.size, &m.sha256, opts, cancel).await? {
        return Ok(Err(why));
    }
    // The rest is small; a failure takes the copy back.
    let rest = async {
        if let Some(g) = &m.globals {
            let gkey = layout.globals(id);
            if g.key != gkey.as_str() {
                return Ok(Err("its manifest names other saved roles".to_string()));
            }
            let sql = match get_bytes(from, &gkey, MAX_RECORD, cancel).await {
                Ok(b) => b,
                Err(StorageError::NotFound(_)) => return Ok(Err("its saved roles are gone".into())),
                Err(e) => return Err(e),
            };
            if sql.len() as u64 != g.size || hex::encode(Sha256::digest(&sql)) != g.sha256 {
                return Ok(Err("its saved roles do not match the manifest".into()));
            }
            put_bytes_with(to, &gkey, sql.into(), opts, cancel).await?;
        }
        if let Some(sig) = signature {
            put_bytes_with(to, &layout.manifest_signature(id), sig.into(), opts, cancel).await?;
        }
        put_bytes_with(to, &layout.manifest(id), manifest_bytes.into(), opts, cancel).await?;
        Ok(Ok(()))
    }
    .await;
    if !matches!(rest, Ok(Ok(()))) {
        take_back(to, &key, &cleanup).await;
        let records = [layout.globals(id), layout.manifest_signature(id), layout.manifest(id)];
        to.delete_many(&records, &cleanup).await.ok();
    }
    Ok(rest?.map(|()| key))
}

/// Streams one object from `from` to `to`, hashing it on the way: the upload is published only
/// when exactly `size` bytes with SHA-256 `sha256` went through; `Ok(Err(why))` when not.
async fn copy_object(
    from: &dyn Storage,
    to: &dyn Storage,
    key: &Key,
    size: u64,
    sha256: &str,
    opts: PutOptions,
    cancel: &CancellationToken,
) -> Result<Result<(), String>, StorageError> {
    let (reader, announced) = match from.get(key, cancel).await {
        Ok(r) => r,
        Err(StorageError::NotFound(_)) => return Ok(Err("its object is gone".into())),
        Err(e) => return Err(e),
    };
    if announced != size {
        return Ok(Err(format!("its object holds {announced} bytes, its manifest says {size}")));
    }
    let (tx, rx) = body_channel(4);
    let feed = async move {
        let mut reader = reader.take(size.saturating_add(1));
        let (mut hash, mut read) = (Sha256::new(), 0u64);
        loop {
            let mut buf = bytes::BytesMut::with_capacity(1 << 20);
            match reader.read_buf(&mut buf).await {
                Ok(0) => break,
                Ok(n) => {
                    read += n as u64;
                    hash.update(&buf);
                    if tx.send(buf.freeze()).await.is_err() {
                        return Ok(Ok(()));
                    }
                }
                Err(e) => {
                    tx.fail().await;
                    return Err(StorageError::other(format!("reading {key}: {e}"), true));
                }
            }
        }
        if read == size && hex::encode(hash.finalize()) == sha256 {
            tx.finish().await;
            Ok(Ok(()))
        } else {
            tx.fail().await;
            Ok(Err(
                "its object does not match the size and SHA-256 its manifest records".to_string()
            ))
        }
    };
    let (fed, put) = tokio::join!(feed, to.put(key, rx, opts, cancel));
    match (fed?, put) {
        (Err(why), _) => Ok(Err(why)),
        (Ok(()), Ok(_)) => Ok(Ok(())),
        (Ok(()), Err(e)) => Err(e),
    }
}

/// With two destinations: each one gets the backups the other holds and it missed.
pub(super) async fn catch_up_all(ctx: &BackupContext, cancel: &CancellationToken) -> Vec<(&'static str, Gap)> {
    let dests = ctx.destinations();
    let mut out = Vec::new();
    if dests.len() < 2 {
        return out;
    }
    let own = ctx.signing.as_ref();
    for (from, to) in [(&dests[0], &dests[1]), (&dests[1], &dests[0])] {
        match catch_up(
            from.1.as_ref(),
            to.1.as_ref(),
            to.0,
            &ctx.layout,
            ctx.lock_days_in(to.0),
            own,
            cancel,
        )
        .await
        {
            Ok(gap) => {
                for id in &gap.copied {
                    info!(backup = %id.file_name(), "Caught up: copied {} from the {} destination to the {}", id.file_name(), from.0, to.0);
                }
                for (id, why) in &gap.refused {
                    error!(backup = %id.file_name(), "Not copied from the {} destination to the {}: {why}", from.0, to.0);
                }
                if let Some(newest) = &gap.newest_copied {
                    update_latest(ctx, to.1.as_ref(), &newest.0, newest.1, cancel).await;
                }
                out.push((to.0, gap));
            }
            Err(e) => {
                warn!(error = %e, "could not catch up the {} destination from the {}; tried again after the next backup", to.0, from.0);
                out.push((
                    to.0,
                    Gap {
                        error: Some(e.to_string()),
                        ..Gap::default()
                    },
                ));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::catalog::BackupEntry;
    use chrono::{TimeZone, Utc};

    fn at(h: u32) -> BackupId {
        BackupId(Utc.with_ymd_and_hms(2026, 1, 1, h, 0, 0).unwrap())
    }

    fn catalog(entries: &[(u32, bool)]) -> Catalog {
        Catalog {
            backups: entries
                .iter()
                .map(|&(h, complete)| BackupEntry {
                    id: at(h),
                    key: String::new(),
                    size: 1,
                    complete,
                })
                .collect(),
            ..Catalog::default()
        }
    }

    #[test]
    fn what_catch_up_copies_and_what_it_settles() {
        // (owed, source, destination, copied, settled)
        type Case<'a> = (&'a [u32], &'a [(u32, bool)], &'a [(u32, bool)], &'a [u32], &'a [u32]);
        let cases: &[Case] = &[
            // Nothing owed: nothing happens, whatever the stores hold.
            (&[], &[(5, true), (4, true)], &[], &[], &[]),
            // Owed and held by the source: copied, oldest first.
            (&[5, 3], &[(5, true), (4, true), (3, true)], &[(4, true)], &[3, 5], &[]),
            // The destination got it after all (a copy by hand): settled.
            (&[4], &[(4, true)], &[(4, true)], &[], &[4]),
            // An incomplete upload in the destination does not count as holding it.
            (&[4], &[(4, true)], &[(4, false)], &[4], &[]),
            // Gone from the source (retention) or never whole there: settled, nothing to copy.
            (&[2, 6], &[(6, false), (4, true)], &[], &[], &[2, 6]),
        ];
        for (owed, from, to, copied, settled) in cases {
            let owed: Vec<BackupId> = owed.iter().map(|&h| at(h)).collect();
            let (c, s) = plan(&owed, &catalog(from), &catalog(to));
            let want = |hs: &[u32]| hs.iter().map(|&h| at(h)).collect::<Vec<_>>();
            assert_eq!((c, s), (want(copied), want(settled)), "owed {owed:?} from {from:?} to {to:?}");
        }
    }
}
