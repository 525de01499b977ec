//! `pgvigil restore`: stream a backup into a database, falling back to older backups.

use crate::commands::open;
use anyhow::{bail, Context, Result};
use chrono::{DateTime, NaiveDate, Utc};
use pgvigil_core::catalog::Catalog;
use pgvigil_core::config::Role;
use pgvigil_core::keys::BackupId;
use pgvigil_core::manifest;
use pgvigil_core::pg::{self, restore as psql};
use pgvigil_core::report::{human_bytes, human_secs};
use pgvigil_core::restore::{restore_into, StreamError};
use pgvigil_core::secret::DbUrl;
use std::time::Instant;
use tokio_util::sync::CancellationToken;

/// Arguments of `pgvigil restore`.
#[derive(clap::Args, Debug)]
pub struct RestoreArgs {
    /// Target database URL (postgresql://user:password@host:port/db). The database must exist.
    #[arg(long, value_name = "URL")]
    to: String,
    /// Which backup: `latest`, a key or file name, or a time (`2026-11-25T17:00:00Z`, `2026-11-25`):
    /// the newest backup taken at or before it.
    #[arg(long, default_value = "latest")]
    backup: String,
    /// How many older backups to try if the chosen one fails.
    #[arg(long, default_value_t = 2)]
    fallback: usize,
    /// Drop every schema (and all its data) in the target before restoring, if it is not empty.
    #[arg(long)]
    clean: bool,
}

/// Parses `--backup` into the newest acceptable backup id.
fn select(cat: &Catalog, which: &str) -> Result<usize> {
    let complete: Vec<BackupId> = cat.complete().map(|b| b.id).collect();
    if complete.is_empty() {
        bail!("there is no complete backup to restore");
    }
    if which == "latest" {
        return Ok(0);
    }
    let name = which.rsplit('/').next().unwrap_or(which);
    if let Some(id) = BackupId::parse_file_name(name) {
        return complete
            .iter()
            .position(|c| *c == id)
            .with_context(|| format!("backup {which} does not exist or is incomplete"));
    }
    let limit: DateTime<Utc> = if let Ok(t) = DateTime::parse_from_rfc3339(which) {
        t.with_timezone(&Utc)
    } else if let Some(id) = BackupId::parse_stamp(which) {
        id.0
    } else if let Ok(d) = NaiveDate::parse_from_str(which, "%Y-%m-%d") {
        d.and_hms_opt(23, 59, 59).map(|t| t.and_utc()).context("bad date")?
    } else {
        bail!("--backup expects latest, a backup key, or a time such as 2026-11-25T17:00:00Z; got {which:?}");
    };
    complete
        .iter()
        .position(|c| c.0 <= limit)
        .with_context(|| format!("no backup was taken at or before {limit}"))
}

/// Refuses a non-empty target unless `clean`; with `clean`, drops its schemas.
async fn prepare_target(url: &DbUrl, clean: bool) -> Result<()> {
    let mut conn = pg::connect(url).await?;
    let tables: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_tables WHERE schemaname NOT IN ('pg_catalog', 'information_schema')")
        .fetch_one(&mut conn)
        .await?;
    if tables > 0 && !clean {
        bail!("the target database {} already has {tables} tables; restore into an empty database, or pass --clean to drop its schemas first (this deletes their data)", url.database());
    }
    if tables > 0 {
        let schemas: Vec<String> = sqlx::query_scalar(
            "SELECT nspname::text FROM pg_namespace WHERE nspname NOT LIKE 'pg\\_%' AND nspname <> 'information_schema'",
        )
        .fetch_all(&mut conn)
        .await?;
        for s in schemas {
            eprintln!("dropping schema {s} in {}", url.database());
            sqlx::query(&format!("DROP SCHEMA \"{}\" CASCADE", s.replace('"', "\"\"")))
                .execute(&mut conn)
                .await?;
        }
        sqlx::query("CREATE SCHEMA IF NOT EXISTS public").execute(&mut conn).await?;
    }
    pg::close(conn).await;
    Ok(())
}

/// Runs the restore with fallback.
pub async fn run(args: RestoreArgs, cancel: &CancellationToken) -> Result<u8> {
    let (settings, st, layout) = open(Role::Cli).await?;
    let target = DbUrl::parse(&args.to).map_err(|e| anyhow::anyhow!("--to: {e}"))?;
    let cat = Catalog::load(st.as_ref(), &layout).await?;
    let first = select(&cat, &args.backup)?;
    prepare_target(&target, args.clean).await?;
    let started = Instant::now();
    let candidates: Vec<BackupId> = cat.complete().map(|b| b.id).skip(first).take(args.fallback + 1).collect();
    for (attempt, id) in candidates.iter().enumerate() {
        let key = layout.backup(*id);
        let m = manifest::read(st.as_ref(), &layout, *id).await?;
        let dump_major = m
            .as_ref()
            .and_then(|m| pg::parse_version(&format!("x) {}", m.pg_dump_version)))
            .map_or(0, |v| v.major);
        let tool = psql::find_psql(settings.tools.psql.as_deref(), dump_major).await?;
        eprintln!(
            "restoring {key} ({}) into {} ...",
            human_bytes(m.as_ref().map_or(0, |m| m.size)),
            target
        );
        let progress = crate::progress::show(format!("restoring {key}"), m.as_ref().map_or(0, |m| m.size));
        let result = restore_into(st.as_ref(), &key, m.as_ref(), &tool, &target, progress.counter(), cancel).await;
        drop(progress);
        let why = match result {
            Ok((problems, None)) if problems.is_empty() => {
                let rto = started.elapsed().as_secs_f64();
                let rpo = (Utc::now() - id.0).num_seconds();
                println!("restored {key} into {}", target.database());
                println!("time taken (RTO): {rto:.1}s");
                println!("data as of {} ({} old: RPO)", id.0.format("%Y-%m-%d %H:%M:%S UTC"), human_secs(rpo));
                if attempt > 0 {
                    println!("note: {attempt} newer backup(s) failed; see above");
                }
                return Ok(0);
            }
            Ok((problems, psql_failure)) => problems.into_iter().chain(psql_failure).collect::<Vec<_>>().join("; "),
            Err(StreamError::Cancelled) => bail!("interrupted; nothing was committed"),
            Err(e) => format!("{e}"),
        };
        eprintln!("FAILED {key}: {why}");
        eprintln!("the target was left unchanged (the restore runs in one transaction)");
    }
    bail!(
        "no backup could be restored ({} tried); see the reasons above, and try `pgvigil check --last 10` to find a good one",
        candidates.len()
    )
}
