//! One verification, start to end: read the manifest, find a psql able to read the dump, create
//! the scratch database, restore into it (committing only an intact object), run the checks,
//! drop the scratch database whatever happened, and turn it all into a record — or into
//! [`CouldNotRun`] when the environment, not the backup, failed.

use super::checks::checks;
use super::queries::split_statements;
use super::{scratch_name, CouldNotRun, VerifyContext, VerifyError};
use crate::infra::pg::psql::{find_psql, Outcome};
use crate::infra::pg::{self, PsqlFailure, Tool};
use crate::infra::secret::DbUrl;
use crate::infra::storage::Key;
use crate::pipeline::restore::{restore_into, RestoreError, StreamError, Target};
use crate::records::history::VerificationRecord;
use crate::records::keys::BackupId;
use crate::records::manifest::{self, Manifest};
use chrono::Utc;
use std::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::warn;

/// Drops scratch databases left behind by a crash (only those with the scratch prefix).
///
/// # Errors
/// When the verify server cannot be reached.
pub async fn cleanup_leftovers(ctx: &VerifyContext) -> Result<Vec<String>, VerifyError> {
    let url = &ctx.database_url;
    let mut conn = pg::connect(url).await?;
    let names: Vec<String> = pg::scratch::list(&mut conn, url)
        .await?
        .into_iter()
        .filter(|n| pg::scratch::is_scratch_name(n))
        .collect();
    for name in &names {
        pg::scratch::drop(&mut conn, url, name).await?;
    }
    pg::close(conn).await;
    Ok(names)
}

/// Outcome of the restore and checks, before it becomes a record.
struct Verdict {
    reasons: Vec<String>,
    restore_secs: f64,
    checks_secs: f64,
    restored_bytes: Option<u64>,
    tables_checked: usize,
}

impl Verdict {
    fn failed(reasons: Vec<String>, restore_secs: f64) -> Self {
        Self {
            reasons,
            restore_secs,
            checks_secs: 0.0,
            restored_bytes: None,
            tables_checked: 0,
        }
    }
}

/// Whether a psql failure on an intact object blames the backup (`Ok`: its reason) or the
/// environment (`Err`).
fn blame(f: PsqlFailure) -> Result<String, CouldNotRun> {
    match f {
        PsqlFailure::Statement { .. } if f.environment_cause().is_none() => Ok(f.to_string()),
        other => Err(CouldNotRun::Psql(other)),
    }
}

/// Restores into the (already created) scratch database and runs the checks.
async fn restore_and_check(
    ctx: &VerifyContext,
    key: &Key,
    m: &Manifest,
    psql_tool: &Tool,
    scratch_url: &DbUrl,
    queries: &[String],
    cancel: &CancellationToken,
) -> Result<Verdict, VerifyError> {
    let t0 = Instant::now();
    let target = Target {
        psql: psql_tool,
        url: scratch_url,
        preamble: "",
    };
    let attempt = match restore_into(ctx.storage.as_ref(), key, Some(m), &target, None, cancel).await {
        Ok(a) => a,
        Err(RestoreError::Stream(StreamError::Cancelled)) => return Err(VerifyError::Cancelled),
        Err(RestoreError::Stream(StreamError::Storage(e))) => return Err(e.into()),
        Err(RestoreError::Pg(e)) => return Err(e.into()),
    };
    let restore_secs = t0.elapsed().as_secs_f64();
    if !attempt.problems.is_empty() {
        return Ok(Verdict::failed(attempt.problems, restore_secs));
    }
    match attempt.outcome {
        Outcome::Committed => {}
        Outcome::RolledBack(None) => return Ok(Verdict::failed(vec!["the restore was rolled back".into()], restore_secs)),
        Outcome::RolledBack(Some(f)) => return blame(f).map(|why| Verdict::failed(vec![why], restore_secs)).map_err(Into::into),
        Outcome::Unknown(f) => return Err(CouldNotRun::CommitUnknown(f).into()),
    }
    let t1 = Instant::now();
    let mut conn = pg::connect(scratch_url).await?;
    let (reasons, size) = tokio::select! {
        r = checks(&mut conn, scratch_url, m, queries) => r,
        () = cancel.cancelled() => return Err(VerifyError::Cancelled),
    };
    pg::close(conn).await;
    Ok(Verdict {
        reasons,
        restore_secs,
        checks_secs: t1.elapsed().as_secs_f64(),
        restored_bytes: size,
        tables_checked: m.tables.len(),
    })
}

/// Verifies one backup. A returned record is a verdict (pass or fail, with reasons); an error
/// means the verification could not run.
///
/// # Errors
/// [`VerifyError::CouldNotRun`] for infrastructure problems, `Cancelled` on shutdown.
pub async fn verify_backup(ctx: &VerifyContext, id: BackupId, cancel: &CancellationToken) -> Result<VerificationRecord, VerifyError> {
    let started = Instant::now();
    let verified_at = Utc::now();
    let key = ctx.layout.backup(id);
    let verdict = match manifest::read(ctx.storage.as_ref(), &ctx.layout, id, cancel).await? {
        None => Verdict::failed(
            vec!["the manifest is missing: the backup did not complete or was not written by pgvigil".into()],
            0.0,
        ),
        Some(m) => verify_with_manifest(ctx, id, &key, &m, cancel).await?,
    };
    Ok(VerificationRecord {
        key: key.to_string(),
        verified_at,
        passed: verdict.reasons.is_empty(),
        reasons: verdict.reasons,
        restore_secs: verdict.restore_secs,
        checks_secs: verdict.checks_secs,
        total_secs: started.elapsed().as_secs_f64(),
        restored_bytes: verdict.restored_bytes,
        tables_checked: verdict.tables_checked,
    })
}

async fn verify_with_manifest(
    ctx: &VerifyContext,
    id: BackupId,
    key: &Key,
    m: &Manifest,
    cancel: &CancellationToken,
) -> Result<Verdict, VerifyError> {
    let dump_major = pg::parse_version(&format!("x) {}", m.pg_dump_version)).map_or(0, |v| v.major);
    let psql_tool = find_psql(ctx.tools.psql.as_deref(), dump_major).await?;
    let queries = match &ctx.cfg.queries_file {
        Some(f) => split_statements(&std::fs::read_to_string(f).map_err(|source| CouldNotRun::QueriesFile { path: f.clone(), source })?),
        None => Vec::new(),
    };
    let admin_url = &ctx.database_url;
    let mut admin = pg::connect(admin_url).await?;
    let name = scratch_name(id);
    pg::scratch::drop(&mut admin, admin_url, &name).await?;
    if let Err(source) = pg::scratch::create(&mut admin, admin_url, &name).await {
        return Err(CouldNotRun::Scratch { name, source }.into());
    }
    let scratch_url = admin_url.with_database(&name);
    // From here on the scratch database exists: whatever happens, drop it.
    let outcome = restore_and_check(ctx, key, m, &psql_tool, &scratch_url, &queries, cancel).await;
    if let Err(e) = pg::scratch::drop(&mut admin, admin_url, &name).await {
        warn!(error = %e, "scratch database not dropped; it will be cleaned at the next start");
    }
    pg::close(admin).await;
    outcome
}
