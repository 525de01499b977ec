//! Retention after a backup (and for `pgvigil prune`): the pure plan from [`crate::policy::retention`]
//! applied to what is listed. Each doomed backup goes together with its manifest and its
//! verification records; failure records older than the retention period go too, so the metadata
//! never grows without bound.

use super::{destination_name, BackupContext, MAX_CLOCK_SKEW_SECS};
use crate::infra::storage::{clock_skew, Key, Storage, StorageError};
use crate::policy::retention::{self, Candidate, KeptBecause, Plan, RetentionPolicy, Verified};
use crate::records::catalog::Catalog;
use crate::records::history::read_verification;
use crate::records::holds;
use crate::records::keys::{BackupId, Layout};
use crate::records::manifest;
use chrono::Utc;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// What one destination records of its backups: the newest verdict of each, and the holds.
#[derive(Debug, Default)]
pub struct Records {
    verdicts: std::collections::BTreeMap<BackupId, Verified>,
    held: Vec<BackupId>,
}

impl Records {
    /// Reads them from `storage`, whose catalog is `cat`.
    ///
    /// # Errors
    /// Storage errors.
    pub async fn read(storage: &dyn Storage, layout: &Layout, cat: &Catalog, cancel: &CancellationToken) -> Result<Self, StorageError> {
        let held = holds::list(storage, layout, cancel).await?.into_iter().map(|(id, _)| id).collect();
        let mut verdicts = std::collections::BTreeMap::new();
        // Newest first: the newest verification of each backup is the one that counts, and the
        // older ones are not read.
        for v in cat.verifications.iter().rev() {
            if verdicts.contains_key(&v.backup) {
                continue;
            }
            let passed = match v.passed {
                Some(p) => p,
                // A record of the older kind names no verdict; one that cannot be read proves
                // nothing (and must not stop retention: anyone who can write to the bucket could
                // put it there).
                None => match read_verification(storage, &v.key, cancel).await {
                    Ok(r) => r.passed,
                    Err(StorageError::NotFound(_)) => continue,
                    Err(e) if e.spoils_the_record() => false,
                    Err(e) => return Err(e),
                },
            };
            let verified = if passed { Verified::Passed } else { Verified::Failed };
            verdicts.insert(v.backup, verified);
        }
        Ok(Self { verdicts, held })
    }

    /// What `self` and `other` together say of `id`: this destination's own verdict of its copy
    /// when it has one, else the other's; held in either.
    fn of(&self, other: Option<&Self>, id: BackupId) -> (Verified, bool) {
        let verdict = self.verdicts.get(&id).or_else(|| other.and_then(|o| o.verdicts.get(&id)));
        let held = self.held.contains(&id) || other.is_some_and(|o| o.held.contains(&id));
        (verdict.copied().unwrap_or(Verified::Not), held)
    }
}

/// Every backup as retention sees it (with what `also`, the other destination, records of it):
/// those listed, and apart from them the lost ones — a manifest whose object is gone counts as a
/// complete backup, so that when a rule keeps it, its manifest stays and the presence check
/// ([`super::presence`]) goes on reporting the loss until the object is put back or the loss
/// acknowledged. What verification said comes from the record names, reading the few records
/// written before the verdict was part of the name.
pub(super) async fn candidates(
    storage: &dyn Storage,
    layout: &Layout,
    cat: &Catalog,
    also: Option<&Records>,
    cancel: &CancellationToken,
) -> Result<(Vec<Candidate>, Vec<Candidate>), StorageError> {
    let own = Records::read(storage, layout, cat, cancel).await?;
    let lost = cat.orphan_manifests.iter().map(|id| (*id, true));
    let mut out = (
        Vec::with_capacity(cat.backups.len()),
        Vec::with_capacity(cat.orphan_manifests.len()),
    );
    for (i, (id, complete)) in cat.backups.iter().map(|b| (b.id, b.complete)).chain(lost).enumerate() {
        let (verified, held) = own.of(also, id);
        let candidate = Candidate {
            id,
            complete,
            verified,
            held,
        };
        if i < cat.backups.len() {
            out.0.push(candidate);
        } else {
            out.1.push(candidate);
        }
    }
    Ok(out)
}

/// With object lock, backups whose lock has not ended are kept (and never sent a delete): their
/// manifest says until when; without a readable manifest, the lock is assumed to run `days` (and
/// a day more) from the backup's time.
async fn keep_locked(
    storage: &dyn Storage,
    layout: &Layout,
    plan: &mut Plan,
    days: u32,
    now: chrono::DateTime<Utc>,
    cancel: &CancellationToken,
) {
    let mut locked = Vec::new();
    for id in &plan.delete {
        let assumed = id.0 + chrono::Duration::days(i64::from(days) + 1);
        let until = match manifest::read(storage, layout, *id, cancel).await {
            Ok(Some(m)) => m.locked_until.unwrap_or(id.0),
            Ok(None) => assumed,
            Err(e) => {
                tracing::warn!(backup = %id.file_name(), error = %e, "could not read the manifest to see how long the backup is locked; keeping it");
                assumed
            }
        };
        if until > now {
            locked.push((*id, until));
        }
    }
    for (id, until) in locked {
        plan.keep(id, KeptBecause::Locked(until));
    }
}

/// Verification records kept per backup (the newest ones).
const RECORDS_PER_BACKUP: usize = 20;

/// Retention on any storage and policy (used by `pgvigil prune` as well). With `dry_run` it only
/// returns the plan; with `confirmed`, it deletes only backups that are both in a fresh plan and
/// in the plan the operator confirmed. What `also` (the other destination) records counts as well
/// as the storage's own ([`Records::of`]).
///
/// # Errors
/// Storage errors.
pub async fn prune_with(
    (storage, also): (&dyn Storage, Option<&Records>),
    layout: &Layout,
    policy: RetentionPolicy,
    lock_days: Option<u32>,
    dry_run: bool,
    confirmed: Option<&[BackupId]>,
    cancel: &CancellationToken,
) -> Result<Plan, StorageError> {
    let catalog = Catalog::load(storage, layout, cancel).await?;
    let now = Utc::now();
    let (listed, lost) = candidates(storage, layout, &catalog, also, cancel).await?;
    // Manifests of lost backups that a rule still keeps stay (see `candidates`).
    let lost_but_kept: Vec<BackupId> = if lost.is_empty() {
        Vec::new()
    } else {
        let all: Vec<Candidate> = listed.iter().chain(&lost).copied().collect();
        let kept = retention::plan(&all, policy, now).rules;
        kept.iter()
            .map(|(id, _)| *id)
            .filter(|id| catalog.orphan_manifests.contains(id))
            .collect()
    };
    let mut plan = retention::plan(&listed, policy, now);
    if let Some(confirmed) = confirmed {
        plan.delete.retain(|id| confirmed.contains(id));
    }
    if let Some(days) = lock_days {
        keep_locked(storage, layout, &mut plan, days, now, cancel).await;
    }
    if dry_run {
        return Ok(plan);
    }
    let cutoff = now - chrono::Duration::days(policy.retention_days.min(100_000) as i64);
    // Backup objects first; a backup's manifest and records go only once its object is gone,
    // so a store that refuses some deletes never leaves a backup without its manifest.
    let deleted = delete_objects(storage, layout, &catalog, &plan.delete, cancel).await;
    let gone = match &deleted {
        Ok(all) => all.as_slice(),
        Err((_, some)) => some.as_slice(),
    };
    let keys = metadata_of(storage, layout, &catalog, gone, &lost_but_kept, cutoff, cancel).await;
    let metadata = if keys.is_empty() {
        Ok(())
    } else {
        storage.delete_many(&keys, cancel).await
    };
    match deleted {
        Err((e, _)) => Err(e),
        Ok(_) => metadata.map(|()| plan),
    }
}

/// Deletes the objects of `delete` (the keys as listed: plain or encrypted). On failure, the error
/// and the backups whose objects are gone all the same.
async fn delete_objects(
    storage: &dyn Storage,
    layout: &Layout,
    catalog: &Catalog,
    delete: &[BackupId],
    cancel: &CancellationToken,
) -> Result<Vec<BackupId>, (StorageError, Vec<BackupId>)> {
    // The keys as listed (plain or encrypted): a versioned bucket gets no delete marker for a
    // name that never existed.
    let listed = |id: &BackupId| -> Key {
        catalog
            .backups
            .iter()
            .find(|b| b.id == *id)
            .and_then(|b| Key::new(b.key.clone()).ok())
            .unwrap_or_else(|| layout.backup(*id))
    };
    let objects: Vec<Key> = delete.iter().map(listed).collect();
    match storage.delete_many(&objects, cancel).await {
        Ok(()) => Ok(delete.to_vec()),
        Err(e) => {
            let mut gone = Vec::new();
            for id in delete {
                if let Ok(None) = storage.head(&listed(id), cancel).await {
                    gone.push(*id);
                }
            }
            Err((e, gone))
        }
    }
}

/// The records to delete once the objects of `gone` are: their manifests, signatures, saved roles
/// and stale records, and saved roles left without a backup past the retention period.
async fn metadata_of(
    storage: &dyn Storage,
    layout: &Layout,
    catalog: &Catalog,
    gone: &[BackupId],
    lost_but_kept: &[BackupId],
    cutoff: chrono::DateTime<Utc>,
    cancel: &CancellationToken,
) -> Vec<Key> {
    let mut keys: Vec<Key> = gone.iter().flat_map(|id| [layout.manifest(*id), layout.globals(*id)]).collect();
    // Signatures only where one was listed: a versioned bucket gets no delete marker for a name
    // that never existed.
    keys.extend(
        gone.iter()
            .filter(|id| catalog.signatures.contains(id))
            .map(|id| layout.manifest_signature(*id)),
    );
    keys.extend(stale_records(catalog, layout, gone, lost_but_kept, cutoff));
    // Saved roles whose backup is gone (a failed clean-up, a crash before the manifest, a
    // lifecycle rule), once they are past the retention period.
    if let Ok(saved) = storage.list(&layout.globals_prefix(), cancel).await {
        let present: std::collections::BTreeSet<BackupId> = catalog.backups.iter().map(|b| b.id).collect();
        keys.extend(
            saved
                .iter()
                .filter_map(|o| layout.parse_globals(o.key.as_str()))
                .filter(|id| !present.contains(id) && id.0 < cutoff && !gone.contains(id))
                .map(|id| layout.globals(id)),
        );
    }
    keys
}

/// pgvigil's own records that no longer serve: those of deleted backups, those of backups already
/// gone (past the retention period, and kept by no rule), verification records beyond the newest
/// [`RECORDS_PER_BACKUP`] of a backup, and failure records past the retention period. So the
/// metadata never grows without bound, even while old backups are kept as evidence.
fn stale_records(
    catalog: &Catalog,
    layout: &Layout,
    deleted: &[BackupId],
    lost_but_kept: &[BackupId],
    cutoff: chrono::DateTime<Utc>,
) -> Vec<Key> {
    let present: std::collections::BTreeSet<BackupId> = catalog.backups.iter().map(|b| b.id).collect();
    let mut keys = Vec::new();
    for m in catalog
        .orphan_manifests
        .iter()
        .filter(|m| m.0 < cutoff && !lost_but_kept.contains(m))
    {
        keys.push(layout.manifest(*m));
        if catalog.signatures.contains(m) {
            keys.push(layout.manifest_signature(*m));
        }
    }
    let mut per_backup: std::collections::BTreeMap<BackupId, usize> = Default::default();
    // Newest first, so that the newest records of each backup are the ones kept.
    for v in catalog.verifications.iter().rev() {
        let seen = per_backup.entry(v.backup).or_default();
        *seen += 1;
        let gone = deleted.contains(&v.backup) || (!present.contains(&v.backup) && v.at.0 < cutoff);
        if gone || *seen > RECORDS_PER_BACKUP {
            keys.extend(Key::new(v.key.clone()).ok());
        }
    }
    keys.extend(
        catalog
            .failures
            .iter()
            .filter(|(at, _)| at.0 < cutoff)
            .filter_map(|(_, key)| Key::new(key.clone()).ok()),
    );
    keys
}

/// Retention in every destination that took this backup (`missed`: those that did not); the
/// lead destination's plan. What the other destination records counts too (the verify service
/// writes where it reads, the primary while it can); without it only the primary prunes, on its
/// own records, and the secondary waits.
pub(super) async fn retain_all(ctx: &BackupContext, missed: &[&str], cancel: &CancellationToken) -> Plan {
    let mut retention = Plan::default();
    let destinations = ctx.destinations();
    let missed = |name: &str| missed.contains(&name);
    for (i, (name, st)) in destinations.iter().enumerate() {
        if missed(name) {
            continue;
        }
        let other = destinations.iter().find(|(n, _)| n != name);
        let records = match other {
            Some((n, o)) if !missed(n) => other_records(ctx, o.as_ref(), cancel).await.map_err(|e| (*n, e)),
            Some((n, _)) => Err((*n, "it missed this backup".to_string())),
            None => Ok(None),
        };
        let also = match records {
            Ok(r) => r,
            Err((n, why)) if *name != destination_name(false) => {
                warn!(
                    destination = *name,
                    "retention in the {name} destination waits until the {n} destination's verification records and holds can be read ({why}): they say which backups to keep"
                );
                continue;
            }
            Err(_) => None,
        };
        let plan = retain(ctx, (name, st.as_ref()), also.as_ref(), cancel).await;
        if i == 0 {
            retention = plan;
        } else if !plan.delete.is_empty() {
            info!(
                destination = name,
                count = plan.delete.len(),
                "Retention deleted {} backups in the {name} destination",
                plan.delete.len()
            );
        }
    }
    retention
}

/// What the other destination records of its backups, for retention here; read within the time a
/// destination may stall.
async fn other_records(ctx: &BackupContext, st: &dyn Storage, cancel: &CancellationToken) -> Result<Option<Records>, String> {
    let read = async {
        let cat = Catalog::load(st, &ctx.layout, cancel).await?;
        Records::read(st, &ctx.layout, &cat, cancel).await
    };
    match tokio::time::timeout(ctx.stall(), read).await {
        Ok(Ok(r)) => Ok(Some(r)),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no answer within {} s", ctx.stall().as_secs())),
    }
}

/// Retention in one destination, unless its clock disagrees with ours; `also`, what the other
/// destination records, counts as well.
async fn retain(ctx: &BackupContext, (name, st): (&'static str, &dyn Storage), also: Option<&Records>, cancel: &CancellationToken) -> Plan {
    let retention = match clock_skew(st, &ctx.layout.probe(), cancel).await {
        Ok(Some(skew)) if skew.abs() > MAX_CLOCK_SKEW_SECS => {
            warn!(
                skew_secs = skew,
                destination = name,
                "this machine's clock differs from the storage server's by {}s; retention is skipped until the clocks agree (it decides by age)",
                skew
            );
            Ok(Plan::default())
        }
        Ok(_) => {
            prune_with(
                (st, also),
                &ctx.layout,
                ctx.cfg.retention,
                ctx.lock_days_in(name),
                false,
                None,
                cancel,
            )
            .await
        }
        Err(e) => {
            warn!(error = %e, destination = name, "could not compare this machine's clock with the storage server's; retention is skipped this time");
            Ok(Plan::default())
        }
    };
    retention.unwrap_or_else(|e| {
        warn!(error = %e, destination = name, "retention could not run; it will be tried after the next backup");
        Plan::default()
    })
}

#[cfg(test)]
#[path = "prune_tests.rs"]
mod tests;
