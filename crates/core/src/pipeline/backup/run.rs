//! One backup while the lease is held, as a list of steps: choose its name, stream the dump into
//! storage, publish it (manifest, then the latest copy) only while the lease is still ours, then
//! what follows a published backup (size and table anomalies, holds, retention). A step that fails
//! takes back what it stored, so nothing partial stays published.

use super::fanout::{self, Fed};
use super::produce::Streamed;
use super::{catchup, prune};
use super::{
    hold_before_table_anomalies, lease, record_owed, save_globals, take_back, update_latest, watch, watch_plan, BackupContext, BackupError,
    BackupOutcome, Incomplete, Missed,
};
use crate::infra::pg::dump;
use crate::infra::storage::parts::expected_backup_size;
use crate::infra::storage::{DynStorage, Key, PutOptions, Storage, StorageError};
use crate::policy::anomaly;
use crate::records::catalog::Catalog;
use crate::records::keys::BackupId;
use crate::records::manifest::{self, Manifest};
use chrono::{DateTime, Utc};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn, Instrument};

/// The backup itself, while the lease is held.
pub(super) async fn leased(ctx: &BackupContext, lease: &lease::Lease, cancel: &CancellationToken) -> Result<BackupOutcome, BackupError> {
    let chosen = choose(ctx, cancel).await?;
    let stored = stream(ctx, &chosen, cancel).await?;
    let published = publish(ctx, lease, &chosen, stored, cancel).await?;
    Ok(after_publish(ctx, &chosen, published, cancel).await)
}

/// What the backup will be: the dump's plan, what storage holds now, and the backup's name.
struct Chosen {
    plan: dump::DumpPlan,
    catalog: Catalog,
    id: BackupId,
    key: Key,
    sealed: bool,
}

/// What was streamed into storage, not yet published.
struct Stored {
    streamed: Streamed,
    parts: u32,
    started_at: DateTime<Utc>,
    locked_until: Option<DateTime<Utc>>,
    /// The destinations holding the whole upload, the lead first when it does.
    held: Vec<(&'static str, DynStorage)>,
    /// The destinations that did not get it, and why.
    missed: Vec<Missed>,
}

/// Plans the dump, reads the catalog, and picks a name no backup has (names have one-second
/// resolution); aborts uploads an earlier run left open.
async fn choose(ctx: &BackupContext, cancel: &CancellationToken) -> Result<Chosen, BackupError> {
    let st = ctx.storage.as_ref();
    let plan = dump::plan(&ctx.database_url, ctx.tools.pg_dump.as_deref()).await?;
    if let Some(why) = crate::infra::pg::psql::pg_dump_warning(&plan.tool.version.to_string()) {
        warn!("this backup is {why}");
    }
    let catalog = Catalog::load(st, &ctx.layout, cancel).await?;
    if let Some(text) = catalog.future_warning() {
        warn!("Future-dated backup: {text}");
    }
    let sealed = !ctx.cfg.recipients.is_empty();
    if !sealed
        && catalog
            .newest_complete()
            .is_some_and(|b| b.key.ends_with(crate::records::keys::SEALED))
    {
        warn!("the newest backup is encrypted but BACKUP_ENCRYPTION_RECIPIENTS is not set: this backup will not be encrypted; set it again unless that is intended");
    }
    let mut id = BackupId::at(Utc::now());
    while st.head(&ctx.layout.object(id, sealed), cancel).await?.is_some()
        || catalog.backups.iter().any(|b| b.id == id)
        || taken_in_the_other(ctx, &ctx.layout.object(id, sealed), cancel).await
    {
        tokio::time::sleep(Duration::from_millis(200)).await;
        id = BackupId::at(Utc::now());
    }
    // Uploads left open by a crash or by an outage that also prevented their abort (in the other
    // destination too, when it answers in time).
    for (i, (name, st)) in ctx.destinations().into_iter().enumerate() {
        let stall = ctx.stall();
        let aborted = tokio::time::timeout(stall, st.abort_pending(&ctx.layout.backups_prefix(), cancel)).await;
        match aborted {
            Ok(Ok(0)) | Err(_) => {}
            Ok(Ok(n)) => info!(
                count = n,
                destination = name,
                "aborted stale incomplete uploads from an earlier run"
            ),
            Ok(Err(e)) if i == 0 => warn!(error = %e, "could not clean up stale incomplete uploads"),
            Ok(Err(_)) => {}
        }
    }
    Ok(Chosen {
        key: ctx.layout.object(id, sealed),
        plan,
        catalog,
        id,
        sealed,
    })
}

/// Whether the other destination already holds an object of this name (another service that
/// failed over may have written it): a name taken anywhere is not used. A destination that does
/// not answer in time counts as not holding it.
async fn taken_in_the_other(ctx: &BackupContext, key: &Key, cancel: &CancellationToken) -> bool {
    let Some(s) = ctx.secondary.as_ref().filter(|s| !s.swapped) else {
        return false;
    };
    matches!(tokio::time::timeout(s.stall, s.storage.head(key, cancel)).await, Ok(Ok(Some(_))))
}

/// Runs `pg_dump` into the upload (one upload per destination), watching for sessions it blocks
/// (and giving way to them with `PG_DUMP_YIELD_AFTER`). Publishes nothing: an upload that does not
/// match what was produced is taken back. With two destinations, the backup goes on as long as
/// one of them takes it whole.
async fn stream(ctx: &BackupContext, c: &Chosen, cancel: &CancellationToken) -> Result<Stored, BackupError> {
    let started_at = Utc::now();
    let app_name = format!("pgvigil-backup {}", c.id.stamp());
    let opts = dump::DumpOptions {
        extra: &ctx.cfg.dump_options,
        lock_wait: ctx.cfg.lock_wait,
        keep_privileges: ctx.cfg.keep_privileges,
    };
    let child = dump::spawn(&c.plan, &ctx.database_url, &opts, &app_name)?;
    let (watching, give_way) = (CancellationToken::new(), cancel.child_token());
    let watcher =
        tokio::spawn(watch::blocked_sessions(watch_plan(ctx, &c.plan, app_name), watching.clone(), give_way.clone()).in_current_span());
    let locked_until = ctx.lock_days.map(|d| started_at + chrono::Duration::days(i64::from(d)));
    let opts = PutOptions {
        expected_size: expected_backup_size(c.catalog.newest_complete().map(|b| b.size), c.plan.database_size),
        force_multipart: false,
        min_part_size: ctx.part_size_floor.load(Ordering::Relaxed),
        retain_until: locked_until,
        whole: false,
    };
    let mut dests = ctx.destinations();
    let mut missed = Vec::new();
    if ctx.secondary.as_ref().is_some_and(|s| s.swapped) {
        // Failed over: the primary, unreachable and without our lease, is left alone and owed it.
        for (name, _) in dests.drain(1..) {
            missed.push(Missed {
                destination: name,
                reason: "it could not be reached when the backup began".into(),
            });
        }
    }
    let (produced, puts, fed) = fanout::upload(ctx, &c.key, child, &dests, opts, &give_way).await;
    watching.cancel();
    // A yield only when it stopped something: a dump that had already ended whole is kept.
    let stopped = matches!(produced, Err(BackupError::Cancelled)) || puts.iter().any(|p| matches!(p, Err(StorageError::Cancelled)));
    if give_way.is_cancelled() && !cancel.is_cancelled() && stopped {
        if let Ok(Some((sessions, waited_secs))) = watcher.await {
            for ((_, st), put) in dests.iter().zip(&puts) {
                if put.is_ok() {
                    take_back(st.as_ref(), &c.key, &CancellationToken::new()).await;
                }
            }
            ctx.yields.fetch_add(1, Ordering::Relaxed);
            return Err(BackupError::Yielded { sessions, waited_secs });
        }
    } else {
        // Best effort only: the watcher may sit in a query on a stalled connection.
        watcher.abort();
    }
    for put in &puts {
        if let Err(StorageError::TooLarge { part_size, .. }) = put {
            // The next attempt plans parts four times as large.
            ctx.part_size_floor.fetch_max(part_size.saturating_mul(4), Ordering::Relaxed);
        }
    }
    let mut held = Vec::new();
    for (i, ((name, st), put)) in dests.iter().zip(&puts).enumerate() {
        let size = produced.as_ref().ok().map(|s| s.size);
        match (fed[i], put) {
            (Fed::Whole, Ok(p)) if Some(p.size) == size => held.push((*name, (*st).clone(), p.parts)),
            (why, put) => {
                if put.is_ok() {
                    // Cleanup after a failure must run even when the run's token is already cancelled.
                    take_back(st.as_ref(), &c.key, &CancellationToken::new()).await;
                }
                let reason = match (why, put) {
                    (Fed::Stalled, _) => format!(
                        "it made no progress for {} s, or took more than twice as long as the other destination, so its upload was stopped",
                        ctx.stall().as_secs()
                    ),
                    (_, Err(e)) => e.to_string(),
                    (_, Ok(p)) => format!("it stored {} bytes of {:?}", p.size, size),
                };
                missed.push(Missed { destination: name, reason });
            }
        }
    }
    match (produced, puts.into_iter().next()) {
        (Ok(streamed), _) if !held.is_empty() => {
            let parts = held[0].2;
            Ok(Stored {
                streamed,
                parts,
                started_at,
                locked_until,
                held: held.into_iter().map(|(n, st, _)| (n, st)).collect(),
                missed,
            })
        }
        (Ok(s), Some(Ok(p))) => Err(Incomplete::SizeMismatch {
            stored: p.size,
            produced: s.size,
        }
        .into()),
        (Ok(_), Some(Err(StorageError::Cancelled))) if fed[0] == Fed::Stalled => Err(StorageError::other(
            format!(
                "every destination stopped taking the backup (the {} made no progress for {} s)",
                dests[0].0,
                ctx.stall().as_secs()
            ),
            true,
        )
        .into()),
        (Err(BackupError::Cancelled), _) | (_, Some(Err(StorageError::Cancelled))) => Err(BackupError::Cancelled),
        // A storage failure explains a producer that could not send.
        (Err(BackupError::Storage(StorageError::Aborted(_))), Some(Err(e))) | (Ok(_), Some(Err(e))) => Err(e.into()),
        (Err(e), _) => Err(e),
        (Ok(_), None) => Err(StorageError::other("no destination to store the backup in", false).into()),
    }
}

/// The manifest of the stored backup.
async fn manifest_of(ctx: &BackupContext, c: &Chosen, s: Stored, cancel: &CancellationToken) -> Manifest {
    let stores: Vec<&dyn Storage> = s.held.iter().map(|(_, st)| st.as_ref()).collect();
    // PG_DUMP_OPTIONS may still leave owners or grants out; then the manifest claims none.
    let stripped = ctx
        .cfg
        .dump_options
        .iter()
        .any(|o| matches!(o.as_str(), "--no-owner" | "--no-privileges" | "--no-acl"));
    let keeps = ctx.cfg.keep_privileges && !stripped;
    let globals = if keeps {
        save_globals(ctx, &c.plan, c.id, &stores, cancel).await
    } else {
        None
    };
    Manifest {
        format: manifest::FORMAT,
        key: c.key.to_string(),
        size: s.streamed.size,
        sha256: s.streamed.sha256,
        uncompressed_size: s.streamed.uncompressed,
        started_at: s.started_at,
        finished_at: Utc::now(),
        database: c.plan.database.clone(),
        server_version: c.plan.server.to_string(),
        pg_dump_version: c.plan.tool.version.to_string(),
        compression_level: ctx.cfg.compression_level,
        parts: s.parts,
        tables: s.streamed.tables,
        // The hashes are of the gzip stream before encryption: in a readable manifest they would
        // let anyone confirm a guess of a small table's contents. Sealed backups are read whole.
        table_members: if c.sealed {
            s.streamed
                .ranges
                .tables
                .into_iter()
                .map(|t| manifest::TableMembers { sha256: None, ..t })
                .collect()
        } else {
            s.streamed.ranges.tables
        },
        before_data: s.streamed.ranges.before.filter(|_| !c.sealed),
        after_data: s.streamed.ranges.after.filter(|_| !c.sealed),
        between_data: if c.sealed { Vec::new() } else { s.streamed.ranges.between },
        toc: s.streamed.toc,
        privileges: keeps.then_some(s.streamed.privileges),
        globals,
        encryption: c.sealed.then(|| manifest::Encryption {
            scheme: "age".into(),
            recipients: ctx.cfg.recipients.iter().map(ToString::to_string).collect(),
        }),
        // The manifest is locked at least as long as the object, and never with a date already
        // past (a dump that took longer than the lock period): retention then waits for the later.
        locked_until: ctx
            .lock_days
            .zip(s.locked_until)
            .map(|(d, t)| t.max(Utc::now() + chrono::Duration::days(i64::from(d)))),
    }
}

/// Writes the manifest, which makes the upload a backup, in every destination that holds it, only
/// while the lease is still ours; then the latest copy. Where that fails, the object (and what was
/// written for it) is taken back; the backup stands as long as one destination published it.
async fn publish(
    ctx: &BackupContext,
    lease: &lease::Lease,
    c: &Chosen,
    mut s: Stored,
    cancel: &CancellationToken,
) -> Result<Published, BackupError> {
    let cleanup = CancellationToken::new();
    let (held, mut missed) = (std::mem::take(&mut s.held), std::mem::take(&mut s.missed));
    let lead = ctx.storage.clone();
    let manifest = manifest_of(ctx, c, Stored { held: held.clone(), ..s }, cancel).await;
    let records = [
        ctx.layout.globals(c.id),
        ctx.layout.manifest(c.id),
        ctx.layout.manifest_signature(c.id),
    ];
    let mut held = held;
    if let Err(e) = lease.confirm().await {
        // The lease lives in the lead: a lost lease stops every destination, an unreachable lead
        // only itself.
        let lost = matches!(e, StorageError::PreconditionFailed(_));
        let (gone, rest): (Vec<_>, Vec<_>) = held.into_iter().partition(|(_, st)| lost || Arc::ptr_eq(st, &lead));
        for (name, st) in &gone {
            take_back(st.as_ref(), &c.key, &cleanup).await;
            st.delete_many(&records[..1], &cleanup).await.ok();
            missed.push(Missed {
                destination: name,
                reason: e.to_string(),
            });
        }
        if rest.is_empty() {
            return Err(if lost { BackupError::LeaseLost } else { e.into() });
        }
        held = rest;
    }
    let mut published = Vec::new();
    let mut first_error = None;
    for (name, st) in held {
        match manifest::write(st.as_ref(), &ctx.layout, c.id, &manifest, ctx.signing.as_ref(), cancel).await {
            Ok(()) => {
                update_latest(ctx, st.as_ref(), &c.key, c.sealed, cancel).await;
                published.push((name, st));
            }
            Err(e) => {
                // Without its manifest the object is not a complete backup: take it back out. The
                // write may have landed although it reported an error (a timeout): a manifest left
                // without its object would read as a lost backup, so it goes too.
                take_back(st.as_ref(), &c.key, &cleanup).await;
                st.delete_many(&records, &cleanup).await.ok();
                missed.push(Missed {
                    destination: name,
                    reason: e.to_string(),
                });
                first_error.get_or_insert(e);
            }
        }
    }
    match first_error {
        Some(e) if published.is_empty() => Err(e.into()),
        _ => Ok(Published {
            manifest,
            stores: published,
            missed,
        }),
    }
}

/// A published backup: its manifest, where it was published, and where not.
struct Published {
    manifest: Manifest,
    stores: Vec<(&'static str, DynStorage)>,
    missed: Vec<Missed>,
}

/// After publishing: the size anomaly, holds before table anomalies (before retention runs, so
/// the backup before a lost table is not pruned), catch-up between two destinations, and
/// retention in each, unless the clocks disagree. Nothing here fails the backup.
async fn after_publish(ctx: &BackupContext, c: &Chosen, p: Published, cancel: &CancellationToken) -> BackupOutcome {
    let manifest = p.manifest;
    let anomaly = anomaly::assess(manifest.size, &c.catalog.recent_sizes_before(c.id, 7));
    let previous = c.catalog.newest_complete().map(|b| b.id);
    let mut table_anomalies = None;
    for (_, st) in &p.stores {
        let found = hold_before_table_anomalies(ctx, st.as_ref(), previous, &manifest, cancel).await;
        table_anomalies = table_anomalies.or(found);
    }
    let took: Vec<&dyn Storage> = p.stores.iter().map(|(_, st)| st.as_ref()).collect();
    for m in &p.missed {
        if let Err(e) = record_owed(&took, &ctx.layout, m.destination, c.id, cancel).await {
            warn!(error = %e, "could not record that the {} destination is owed {}; copy it there by hand", m.destination, c.id.file_name());
        }
    }
    // A destination that missed this backup is down or stalled: it is left alone until the next
    // run (a call to it could hang for as long as the store's timeouts allow).
    let caught_up = if p.missed.is_empty() {
        catchup::catch_up_all(ctx, cancel).await
    } else {
        Vec::new()
    };
    let missed: Vec<&str> = p.missed.iter().map(|m| m.destination).collect();
    let retention = prune::retain_all(ctx, &missed, cancel).await;
    for m in &p.missed {
        warn!(
            destination = m.destination,
            "Backup not stored in the {} destination: {}; it is copied there once that destination takes it", m.destination, m.reason
        );
    }
    ctx.yields.store(0, Ordering::Relaxed);
    BackupOutcome {
        id: c.id,
        manifest,
        anomaly,
        table_anomalies,
        retention,
        missed: p.missed,
        caught_up,
    }
}
