//! One backup: `pg_dump` → parallel gzip → storage, with the manifest written only after the
//! upload completed, then `backup_latest.sql.gz`, retention and size checks.
//!
//! The upload is published only when `pg_dump` exited 0, its output ended with the closing line,
//! and every block was compressed. Anything else aborts the upload: no partial object, no
//! manifest, `backup_latest.sql.gz` untouched.

use crate::anomaly::{self, Anomaly, Severity};
use crate::catalog::{write_failure, Catalog, FailureRecord};
use crate::compress::{ParallelGzip, BLOCK_SIZE};
use crate::config::{BackupConfig, ToolsConfig};
use crate::dumpscan::DumpScanner;
use crate::keys::{BackupId, Key, Layout};
use crate::manifest::{self, Manifest};
use crate::pg::{dump, PgError};
use crate::retention::{self, Candidate};
use crate::storage::{body_channel, BodySender, DynStorage, PutOptions, StorageError};
use chrono::Utc;
use sha2::{Digest, Sha256};
use std::time::{Duration, Instant};
use tokio::io::AsyncReadExt;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

/// Everything a backup needs.
#[derive(Debug, Clone)]
pub struct BackupContext {
    /// Where backups go.
    pub storage: DynStorage,
    /// Key names under the prefix.
    pub layout: Layout,
    /// Database, compression, retention.
    pub cfg: BackupConfig,
    /// Which client tools to use.
    pub tools: ToolsConfig,
}

/// Why a backup failed.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    /// Database or client tool problem.
    #[error(transparent)]
    Pg(#[from] PgError),
    /// Storage problem.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// The dump stream was not a complete dump.
    #[error("{0}")]
    Incomplete(String),
    /// Shutdown interrupted the backup; the upload was aborted.
    #[error("interrupted by shutdown; the upload was aborted")]
    Cancelled,
}

impl BackupError {
    /// Whether retrying soon may help.
    pub fn is_retryable(&self) -> bool {
        match self {
            BackupError::Pg(e) => e.is_retryable() || matches!(e, PgError::Tool(_)),
            BackupError::Storage(e) => e.is_retryable(),
            BackupError::Incomplete(_) => true,
            BackupError::Cancelled => false,
        }
    }
}

/// A finished backup.
#[derive(Debug, Clone)]
pub struct BackupOutcome {
    /// Identity.
    pub id: BackupId,
    /// The manifest as written.
    pub manifest: Manifest,
    /// Size warning, if any.
    pub anomaly: Option<Anomaly>,
    /// Backups removed by retention afterwards.
    pub pruned: Vec<BackupId>,
}

/// Statistics of the streamed dump.
struct Streamed {
    size: u64,
    uncompressed: u64,
    sha256: String,
    tables: std::collections::BTreeMap<String, u64>,
}

/// Interval of progress lines during long dumps.
const PROGRESS_EVERY: Duration = Duration::from_secs(30);

/// Reads `pg_dump`'s stdout, scans and compresses it, and feeds the upload body. Finishes the body
/// only after `pg_dump` exited 0 and the dump proved complete.
async fn produce(
    mut child: crate::pg::OwnedChild,
    tx: BodySender,
    level: u32,
    cancel: &CancellationToken,
) -> Result<Streamed, BackupError> {
    let Some(mut stdout) = child.take_stdout() else {
        tx.fail("pg_dump has no stdout").await;
        return Err(BackupError::Incomplete("pg_dump has no stdout".into()));
    };
    let mut scanner = DumpScanner::new();
    let mut gz = ParallelGzip::new(level);
    let mut sha = Sha256::new();
    let mut size = 0u64;
    let started = Instant::now();
    let mut last_progress = Instant::now();
    let mut eof = false;
    let result: Result<(), BackupError> = async {
        while !eof {
            let mut block = gz.buffer();
            while block.len() < BLOCK_SIZE {
                let n = tokio::select! {
                    biased;
                    () = cancel.cancelled() => return Err(BackupError::Cancelled),
                    r = stdout.read_buf(&mut block) => r.map_err(|e| BackupError::Incomplete(format!("reading pg_dump output: {e}")))?,
                };
                if n == 0 {
                    eof = true;
                    break;
                }
            }
            scanner.feed(&block);
            let members = if block.is_empty() {
                None
            } else {
                gz.push(block)
                    .await
                    .map_err(|e| BackupError::Incomplete(format!("compression failed: {e}")))?
            };
            let mut out = members.into_iter().collect::<Vec<_>>();
            if eof {
                while let Some(m) = gz
                    .pop()
                    .await
                    .map_err(|e| BackupError::Incomplete(format!("compression failed: {e}")))?
                {
                    out.push(m);
                }
            }
            for m in out {
                sha.update(&m);
                size += m.len() as u64;
                if tx.send(m).await.is_err() {
                    // The uploader stopped; its own error explains why.
                    return Err(BackupError::Storage(StorageError::Aborted("the upload stopped".into())));
                }
            }
            if last_progress.elapsed() >= PROGRESS_EVERY {
                last_progress = Instant::now();
                let secs = started.elapsed().as_secs_f64().max(0.001);
                info!(
                    dumped_bytes = scanner.bytes(),
                    compressed_bytes = size,
                    rate_mb_s = format!("{:.1}", scanner.bytes() as f64 / secs / 1e6),
                    "Backup in progress"
                );
            }
        }
        Ok(())
    }
    .await;
    if let Err(e) = result {
        child.kill().await;
        let _ = child.wait().await;
        tx.fail(e.to_string()).await;
        return Err(e);
    }
    // Only now, with the whole stream read, does pg_dump's exit status mean anything.
    if let Err(f) = child.wait().await {
        let msg = dump_failure(&f);
        tx.fail(msg.clone()).await;
        return Err(BackupError::Pg(PgError::Other(msg)));
    }
    let scan = scanner.finish();
    if !scan.complete {
        let why = match &scan.open_copy {
            Some(t) => format!("the dump ended inside the data of table {t}"),
            None => "the dump does not end with pg_dump's closing line".into(),
        };
        tx.fail(why.clone()).await;
        return Err(BackupError::Incomplete(why));
    }
    tx.finish().await;
    Ok(Streamed {
        size,
        uncompressed: scan.bytes,
        sha256: hex::encode(sha.finalize()),
        tables: scan.tables,
    })
}

/// Explains a failed pg_dump in plain words, recognising the version-mismatch case.
fn dump_failure(f: &crate::pg::ToolFailure) -> String {
    let joined = f.stderr.join(" ");
    if joined.contains("server version mismatch") {
        return format!(
            "pg_dump is older than the database server: {}",
            f.stderr.iter().find(|l| l.contains("version")).cloned().unwrap_or(joined)
        );
    }
    format!(
        "pg_dump {}: {}",
        f.status,
        if joined.is_empty() { "(no error output)".into() } else { joined }
    )
}

/// The size to plan the upload's part size for: the previous backup's, or for a first backup a
/// quarter of the database's size on disk. The part size allows four times the expected size, so
/// even a first backup as large as the database on disk fits in S3's 10,000 parts.
fn expected_size(previous: Option<u64>, database_size: Option<u64>) -> Option<u64> {
    previous.or(database_size.map(|d| d / 4))
}

/// Takes one backup. The same code path serves the service loop, `--once` and `pgvigil backup-now`.
///
/// # Errors
/// [`BackupError`]; in every case nothing partial is published.
pub async fn run_once(ctx: &BackupContext, cancel: &CancellationToken) -> Result<BackupOutcome, BackupError> {
    let plan = dump::plan(&ctx.cfg.database_url, ctx.tools.pg_dump.as_deref()).await?;
    let catalog = Catalog::load(ctx.storage.as_ref(), &ctx.layout).await?;
    let expected = expected_size(catalog.newest_complete().map(|b| b.size), plan.database_size);

    // Names have one-second resolution: never reuse the name of an existing backup.
    let mut id = BackupId::at(Utc::now());
    while ctx.storage.head(&ctx.layout.backup(id)).await?.is_some() || catalog.backups.iter().any(|b| b.id == id) {
        tokio::time::sleep(Duration::from_millis(200)).await;
        id = BackupId::at(Utc::now());
    }
    // Uploads left open by a crash or by an outage that also prevented their abort.
    match ctx.storage.abort_pending(&ctx.layout.backups_prefix()).await {
        Ok(0) => {}
        Ok(n) => info!(count = n, "aborted stale incomplete uploads from an earlier run"),
        Err(e) => warn!(error = %e, "could not clean up stale incomplete uploads"),
    }
    let started_at = Utc::now();
    let key = ctx.layout.backup(id);
    let child = dump::spawn(&plan, &ctx.cfg.database_url, &ctx.cfg.dump_options)?;
    let (tx, rx) = body_channel(4);
    let opts = PutOptions {
        expected_size: expected,
        force_multipart: false,
    };
    let (produced, put) = tokio::join!(
        produce(child, tx, ctx.cfg.compression_level, cancel),
        ctx.storage.put(&key, rx, opts, cancel)
    );
    let (streamed, parts) = match (produced, put) {
        (Ok(s), Ok(p)) if p.size == s.size => (s, p.parts),
        (Ok(s), Ok(p)) => {
            ctx.storage.delete_many(std::slice::from_ref(&key)).await.ok();
            return Err(BackupError::Incomplete(format!("stored {} bytes but produced {}", p.size, s.size)));
        }
        (Err(BackupError::Cancelled), _) | (_, Err(StorageError::Cancelled)) => return Err(BackupError::Cancelled),
        // A storage failure explains a producer that could not send.
        (Err(BackupError::Storage(StorageError::Aborted(_))), Err(e)) => return Err(e.into()),
        (Err(e), _) => return Err(e),
        (Ok(_), Err(e)) => return Err(e.into()),
    };
    let manifest = Manifest {
        format: manifest::FORMAT,
        key: key.to_string(),
        size: streamed.size,
        sha256: streamed.sha256,
        uncompressed_size: streamed.uncompressed,
        started_at,
        finished_at: Utc::now(),
        database: plan.database.clone(),
        server_version: plan.server.to_string(),
        pg_dump_version: plan.tool.version.to_string(),
        compression_level: ctx.cfg.compression_level,
        parts,
        tables: streamed.tables,
    };
    if let Err(e) = manifest::write(ctx.storage.as_ref(), &ctx.layout, id, &manifest).await {
        // Without its manifest the object is not a complete backup: take it back out.
        ctx.storage.delete_many(std::slice::from_ref(&key)).await.ok();
        return Err(e.into());
    }
    if let Err(e) = ctx.storage.copy(&key, &ctx.layout.latest()).await {
        warn!(key = %key, error = %e, "could not update backup_latest.sql.gz; the backup itself is complete");
    }
    let recent = catalog.recent_sizes_before(id, 7);
    let anomaly = anomaly::assess(manifest.size, &recent);
    let pruned = match prune(ctx, false).await {
        Ok(p) => p,
        Err(e) => {
            warn!(error = %e, "retention could not run; it will be tried after the next backup");
            Vec::new()
        }
    };
    Ok(BackupOutcome {
        id,
        manifest,
        anomaly,
        pruned,
    })
}

/// Applies retention: deletes old backups (and their manifests) under the prefix. With `dry_run`
/// it only returns the plan.
///
/// # Errors
/// Storage errors.
pub async fn prune(ctx: &BackupContext, dry_run: bool) -> Result<Vec<BackupId>, StorageError> {
    prune_with(ctx.storage.as_ref(), &ctx.layout, ctx.cfg.retention, dry_run).await
}

/// Retention on any storage and policy (used by the CLI as well).
///
/// # Errors
/// Storage errors.
pub async fn prune_with(
    storage: &dyn crate::storage::Storage,
    layout: &Layout,
    policy: retention::RetentionPolicy,
    dry_run: bool,
) -> Result<Vec<BackupId>, StorageError> {
    let catalog = Catalog::load(storage, layout).await?;
    let candidates: Vec<Candidate> = catalog
        .backups
        .iter()
        .map(|b| Candidate {
            id: b.id,
            complete: b.complete,
        })
        .collect();
    let doomed = retention::plan(&candidates, policy, Utc::now());
    if dry_run || doomed.is_empty() {
        return Ok(doomed);
    }
    let mut keys: Vec<Key> = Vec::new();
    for id in &doomed {
        keys.push(layout.backup(*id));
        keys.push(layout.manifest(*id));
    }
    // Manifests whose backups are already gone and that are past retention go too.
    let cutoff = Utc::now() - chrono::Duration::days(policy.retention_days as i64);
    keys.extend(
        catalog
            .orphan_manifests
            .iter()
            .filter(|m| m.0 < cutoff)
            .map(|m| layout.manifest(*m)),
    );
    storage.delete_many(&keys).await?;
    Ok(doomed)
}

/// Runs one backup and logs the operator-facing lines; records failures (best effort).
///
/// # Errors
/// The backup's error, after it was logged.
pub async fn run_and_log(ctx: &BackupContext, cancel: &CancellationToken) -> Result<BackupOutcome, BackupError> {
    let started = Instant::now();
    let at = Utc::now();
    match run_once(ctx, cancel).await {
        Ok(out) => {
            let m = &out.manifest;
            info!(
                key = %m.key,
                size_bytes = m.size,
                uncompressed_bytes = m.uncompressed_size,
                duration_secs = format!("{:.1}", started.elapsed().as_secs_f64()),
                tables = m.tables.len(),
                rows = m.tables.values().sum::<u64>(),
                "Backup completed successfully"
            );
            if let Some(a) = &out.anomaly {
                match a.severity {
                    Severity::Warning => warn!(key = %m.key, "Backup size anomaly: {}", a.message),
                    Severity::Critical => error!(key = %m.key, "Backup size anomaly (critical): {}", a.message),
                }
            }
            if !out.pruned.is_empty() {
                let names: Vec<String> = out.pruned.iter().map(BackupId::file_name).collect();
                info!(deleted = names.len(), backups = %names.join(", "), "Retention removed old backups");
            }
            Ok(out)
        }
        Err(e) => {
            error!(error = %e, retryable = e.is_retryable(), "Backup failed");
            if !matches!(e, BackupError::Cancelled) {
                let rec = FailureRecord {
                    at,
                    error: e.to_string(),
                    retryable: e.is_retryable(),
                };
                if let Err(we) = write_failure(ctx.storage.as_ref(), &ctx.layout, &rec).await {
                    tracing::debug!(error = %we, "could not store the failure record");
                }
            }
            Err(e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::expected_size;
    use crate::storage::choose_part_size;

    #[test]
    fn first_backups_plan_parts_from_the_database_size() {
        let gib = 1u64 << 30;
        let cases = [
            (Some(5 * gib), Some(900 * gib), Some(5 * gib)), // the previous backup wins
            (None, Some(800 * gib), Some(200 * gib)),
            (None, None, None),
            (Some(0), None, Some(0)),
        ];
        for (previous, db, want) in cases {
            assert_eq!(expected_size(previous, db), want, "{previous:?} {db:?}");
        }
        // A first backup of a 2 TiB database that compresses badly (object as large as the
        // database) still fits in 10,000 parts.
        let db = 2u64 << 40;
        let part = choose_part_size(expected_size(None, Some(db)), None);
        assert!(db / part < 10_000, "{part}");
        // Without the estimate it would not.
        assert!(db / choose_part_size(None, None) > 10_000);
    }
}
