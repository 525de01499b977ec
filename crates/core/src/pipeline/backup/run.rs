//! One backup while the lease is held, as a list of steps: choose its name, stream the dump into
//! storage, publish it (manifest, then the latest copy) only while the lease is still ours, then
//! what follows a published backup (size and table anomalies, holds, retention). A step that fails
//! takes back what it stored, so nothing partial stays published.

use super::produce::{self, Streamed};
use super::{
    hold_before_table_anomalies, lease, prune, save_globals, take_back, update_latest, watch, watch_plan, BackupContext, BackupError,
    BackupOutcome, Incomplete, MAX_CLOCK_SKEW_SECS,
};
use crate::infra::pg::dump;
use crate::infra::storage::parts::expected_backup_size;
use crate::infra::storage::{body_channel, clock_skew, Key, PutOptions, StorageError};
use crate::policy::anomaly;
use crate::policy::retention::Plan;
use crate::records::catalog::Catalog;
use crate::records::keys::BackupId;
use crate::records::manifest::{self, Manifest};
use chrono::{DateTime, Utc};
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn, Instrument};

/// The backup itself, while the lease is held.
pub(super) async fn leased(ctx: &BackupContext, lease: &lease::Lease, cancel: &CancellationToken) -> Result<BackupOutcome, BackupError> {
    let chosen = choose(ctx, cancel).await?;
    let stored = stream(ctx, &chosen, cancel).await?;
    let manifest = publish(ctx, lease, &chosen, stored, cancel).await?;
    Ok(after_publish(ctx, &chosen, manifest, cancel).await)
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
    while st.head(&ctx.layout.object(id, sealed), cancel).await?.is_some() || catalog.backups.iter().any(|b| b.id == id) {
        tokio::time::sleep(Duration::from_millis(200)).await;
        id = BackupId::at(Utc::now());
    }
    // Uploads left open by a crash or by an outage that also prevented their abort.
    match st.abort_pending(&ctx.layout.backups_prefix(), cancel).await {
        Ok(0) => {}
        Ok(n) => info!(count = n, "aborted stale incomplete uploads from an earlier run"),
        Err(e) => warn!(error = %e, "could not clean up stale incomplete uploads"),
    }
    Ok(Chosen {
        key: ctx.layout.object(id, sealed),
        plan,
        catalog,
        id,
        sealed,
    })
}

/// Runs `pg_dump` into the upload, watching for sessions it blocks (and giving way to them with
/// `PG_DUMP_YIELD_AFTER`). Publishes nothing: an upload that does not match what was produced is
/// taken back.
async fn stream(ctx: &BackupContext, c: &Chosen, cancel: &CancellationToken) -> Result<Stored, BackupError> {
    let st = ctx.storage.as_ref();
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
    let (tx, rx) = body_channel(4);
    let locked_until = ctx.lock_days.map(|d| started_at + chrono::Duration::days(i64::from(d)));
    let opts = PutOptions {
        expected_size: expected_backup_size(c.catalog.newest_complete().map(|b| b.size), c.plan.database_size),
        force_multipart: false,
        min_part_size: ctx.part_size_floor.load(Ordering::Relaxed),
        retain_until: locked_until,
        whole: false,
    };
    let (produced, put) = tokio::join!(
        produce::produce(child, tx, ctx.cfg.compression_level, &ctx.cfg.recipients, &give_way),
        st.put(&c.key, rx, opts, &give_way)
    );
    watching.cancel();
    // A yield only when it stopped something: a dump that had already ended whole is kept.
    let stopped = matches!(produced, Err(BackupError::Cancelled)) || matches!(put, Err(StorageError::Cancelled));
    if give_way.is_cancelled() && !cancel.is_cancelled() && stopped {
        if let Ok(Some((sessions, waited_secs))) = watcher.await {
            if put.is_ok() {
                take_back(st, &c.key, &CancellationToken::new()).await;
            }
            ctx.yields.fetch_add(1, Ordering::Relaxed);
            return Err(BackupError::Yielded { sessions, waited_secs });
        }
    } else {
        // Best effort only: the watcher may sit in a query on a stalled connection.
        watcher.abort();
    }
    if let Err(StorageError::TooLarge { part_size, .. }) = &put {
        // The next attempt plans parts four times as large.
        ctx.part_size_floor.fetch_max(part_size.saturating_mul(4), Ordering::Relaxed);
    }
    match (produced, put) {
        (Ok(streamed), Ok(p)) if p.size == streamed.size => Ok(Stored {
            streamed,
            parts: p.parts,
            started_at,
            locked_until,
        }),
        (Ok(s), Ok(p)) => {
            // Cleanup after a failure must run even when the run's token is already cancelled.
            take_back(st, &c.key, &CancellationToken::new()).await;
            Err(Incomplete::SizeMismatch {
                stored: p.size,
                produced: s.size,
            }
            .into())
        }
        (Err(BackupError::Cancelled), _) | (_, Err(StorageError::Cancelled)) => Err(BackupError::Cancelled),
        // A storage failure explains a producer that could not send.
        (Err(BackupError::Storage(StorageError::Aborted(_))), Err(e)) | (Ok(_), Err(e)) => Err(e.into()),
        (Err(e), _) => Err(e),
    }
}

/// The manifest of the stored backup.
async fn manifest_of(ctx: &BackupContext, c: &Chosen, s: Stored, cancel: &CancellationToken) -> Manifest {
    // PG_DUMP_OPTIONS may still leave owners or grants out; then the manifest claims none.
    let stripped = ctx
        .cfg
        .dump_options
        .iter()
        .any(|o| matches!(o.as_str(), "--no-owner" | "--no-privileges" | "--no-acl"));
    let keeps = ctx.cfg.keep_privileges && !stripped;
    let globals = if keeps {
        save_globals(ctx, &c.plan, c.id, cancel).await
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

/// Writes the manifest, which makes the upload a backup, only while the lease is still ours; then
/// the latest copy. On failure the object (and what was written for it) is taken back.
async fn publish(
    ctx: &BackupContext,
    lease: &lease::Lease,
    c: &Chosen,
    s: Stored,
    cancel: &CancellationToken,
) -> Result<Manifest, BackupError> {
    let st = ctx.storage.as_ref();
    let cleanup = CancellationToken::new();
    let manifest = manifest_of(ctx, c, s, cancel).await;
    if let Err(e) = lease.confirm().await {
        take_back(st, &c.key, &cleanup).await;
        st.delete_many(&[ctx.layout.globals(c.id)], &cleanup).await.ok();
        return Err(match e {
            StorageError::PreconditionFailed(_) => BackupError::LeaseLost,
            other => other.into(),
        });
    }
    if let Err(e) = manifest::write(st, &ctx.layout, c.id, &manifest, ctx.signing.as_ref(), cancel).await {
        // Without its manifest the object is not a complete backup: take it back out. The write
        // may have landed although it reported an error (a timeout): a manifest left without its
        // object would read as a lost backup, so it goes too.
        take_back(st, &c.key, &cleanup).await;
        let records = [
            ctx.layout.globals(c.id),
            ctx.layout.manifest(c.id),
            ctx.layout.manifest_signature(c.id),
        ];
        st.delete_many(&records, &cleanup).await.ok();
        return Err(e.into());
    }
    update_latest(ctx, &c.key, c.sealed, cancel).await;
    Ok(manifest)
}

/// After publishing: the size anomaly, holds before table anomalies (before retention runs, so
/// the backup before a lost table is not pruned), and retention, unless the clocks disagree.
/// Nothing here fails the backup.
async fn after_publish(ctx: &BackupContext, c: &Chosen, manifest: Manifest, cancel: &CancellationToken) -> BackupOutcome {
    let st = ctx.storage.as_ref();
    let anomaly = anomaly::assess(manifest.size, &c.catalog.recent_sizes_before(c.id, 7));
    let table_anomalies = hold_before_table_anomalies(ctx, c.catalog.newest_complete().map(|b| b.id), &manifest, cancel).await;
    let retention = match clock_skew(st, &ctx.layout.probe(), cancel).await {
        Ok(Some(skew)) if skew.abs() > MAX_CLOCK_SKEW_SECS => {
            warn!(
                skew_secs = skew,
                "this machine's clock differs from the storage server's by {}s; retention is skipped until the clocks agree (it decides by age)",
                skew
            );
            Ok(Plan::default())
        }
        Ok(_) => prune(ctx, false, cancel).await,
        Err(e) => {
            warn!(error = %e, "could not compare this machine's clock with the storage server's; retention is skipped this time");
            Ok(Plan::default())
        }
    };
    let retention = retention.unwrap_or_else(|e| {
        warn!(error = %e, "retention could not run; it will be tried after the next backup");
        Plan::default()
    });
    ctx.yields.store(0, Ordering::Relaxed);
    BackupOutcome {
        id: c.id,
        manifest,
        anomaly,
        table_anomalies,
        retention,
    }
}
