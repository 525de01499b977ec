//! Verification: restore a backup from storage into a scratch database and prove it is good.
//!
//! Integrity first (SHA-256 and size against the manifest, every gzip member's CRC and length,
//! pg_dump's closing line), then the restore with `psql -v ON_ERROR_STOP=1`, then checks: every
//! table's exact row count, `amcheck` on btree indexes when available, and the operator's own
//! queries. Scratch databases carry [`SCRATCH_PREFIX`]; nothing else on the server is touched.

use crate::catalog::{write_verification, Catalog, VerificationRecord};
use crate::config::{ToolsConfig, VerifyConfig};
use crate::keys::{BackupId, Key, Layout};
use crate::manifest::{self, Manifest};
use crate::pg::{self, restore as psql, PgError};
use crate::restore::{restore_into, StreamError};
use crate::secret::DbUrl;
use crate::storage::{DynStorage, StorageError};
use chrono::Utc;
use sqlx::postgres::PgConnection;
use sqlx::{Column, Row, TypeInfo};
use std::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

/// Every scratch database pgvigil creates starts with this; it drops only such databases.
pub const SCRATCH_PREFIX: &str = "pgvigil_verify_";

/// Everything a verification needs.
#[derive(Debug, Clone)]
pub struct VerifyContext {
    /// Where the backups are.
    pub storage: DynStorage,
    /// Key names.
    pub layout: Layout,
    /// Verify server, interval, queries, sampling.
    pub cfg: VerifyConfig,
    /// Client tools.
    pub tools: ToolsConfig,
}

/// A verification that could not run: not a verdict on the backup.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// Storage, the verify server or the client tools are not usable right now.
    #[error("{0}")]
    CouldNotRun(String),
    /// Shutdown.
    #[error("interrupted by shutdown")]
    Cancelled,
    /// Nothing to verify yet.
    #[error("there is no complete backup to verify yet")]
    NothingToVerify,
}

impl From<StorageError> for VerifyError {
    fn from(e: StorageError) -> Self {
        match e {
            StorageError::Cancelled => VerifyError::Cancelled,
            other => VerifyError::CouldNotRun(other.to_string()),
        }
    }
}

impl From<PgError> for VerifyError {
    fn from(e: PgError) -> Self {
        VerifyError::CouldNotRun(e.to_string())
    }
}

/// Name of the scratch database for a backup: prefix + timestamp, lower case, safe unquoted.
pub fn scratch_name(id: BackupId) -> String {
    format!("{SCRATCH_PREFIX}{}", id.stamp().to_ascii_lowercase().replace('-', "_"))
}

/// Which backup to verify this run: the newest complete one not yet verified; with probability
/// `rate` (or when the newest is already verified) a random older complete one instead, like the
/// runbook's weekly drill of a random, not-latest backup. `roll` and `pick` are uniform in [0, 1).
pub fn choose(cat: &Catalog, rate: f64, roll: f64, pick: f64) -> Option<BackupId> {
    let complete: Vec<BackupId> = cat.complete().map(|b| b.id).collect();
    let newest = *complete.first()?;
    let older = &complete[1..];
    let newest_unverified = !cat.is_verified(newest);
    if older.is_empty() {
        return Some(newest);
    }
    if newest_unverified && roll >= rate {
        return Some(newest);
    }
    let i = ((pick * older.len() as f64) as usize).min(older.len() - 1);
    Some(older[i])
}

/// Drops scratch databases left behind by a crash (only those with [`SCRATCH_PREFIX`]).
///
/// # Errors
/// When the verify server cannot be reached.
pub async fn cleanup_leftovers(ctx: &VerifyContext) -> Result<Vec<String>, VerifyError> {
    let url = &ctx.cfg.database_url;
    let mut conn = pg::connect(url).await?;
    let names: Vec<String> = sqlx::query_scalar("SELECT datname::text FROM pg_database WHERE starts_with(datname, $1) ORDER BY 1")
        .bind(SCRATCH_PREFIX)
        .fetch_all(&mut conn)
        .await
        .map_err(|e| pg::classify(url, &e))?;
    for name in &names {
        drop_scratch(&mut conn, name).await?;
    }
    pg::close(conn).await;
    Ok(names)
}

async fn drop_scratch(conn: &mut PgConnection, name: &str) -> Result<(), VerifyError> {
    // Defence in depth: this function must never drop anything else.
    if !name.starts_with(SCRATCH_PREFIX) || name.contains('"') {
        return Err(VerifyError::CouldNotRun(format!(
            "refusing to drop {name:?}: not a pgvigil scratch database"
        )));
    }
    sqlx::query(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
        .execute(&mut *conn)
        .await
        .map_err(|e| VerifyError::CouldNotRun(format!("could not drop scratch database {name}: {e}")))?;
    Ok(())
}

/// Splits a file of SQL statements on `;` outside quotes, dollar quotes and comments.
pub fn split_statements(sql: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let chars: Vec<char> = sql.chars().collect();
    let mut i = 0;
    let mut dollar: Option<String> = None;
    let mut quote: Option<char> = None;
    while i < chars.len() {
        let c = chars[i];
        if let Some(tag) = &dollar {
            if sql_at(&chars, i, tag) {
                cur.push_str(tag);
                i += tag.chars().count();
                dollar = None;
                continue;
            }
        } else if let Some(q) = quote {
            if c == q {
                quote = None;
            }
        } else if c == '\'' || c == '"' {
            quote = Some(c);
        } else if c == '-' && chars.get(i + 1) == Some(&'-') {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
            continue;
        } else if c == '$' {
            let end = chars[i + 1..].iter().position(|&ch| ch == '$').map(|p| i + 1 + p);
            if let Some(end) = end {
                let tag: String = chars[i..=end].iter().collect();
                if tag[1..tag.len() - 1].chars().all(|ch| ch.is_alphanumeric() || ch == '_') {
                    cur.push_str(&tag);
                    i = end + 1;
                    dollar = Some(tag);
                    continue;
                }
            }
        } else if c == ';' {
            if !cur.trim().is_empty() {
                out.push(cur.trim().to_string());
            }
            cur.clear();
            i += 1;
            continue;
        }
        cur.push(c);
        i += 1;
    }
    if !cur.trim().is_empty() {
        out.push(cur.trim().to_string());
    }
    out
}

fn sql_at(chars: &[char], i: usize, tag: &str) -> bool {
    tag.chars().enumerate().all(|(k, t)| chars.get(i + k) == Some(&t))
}

/// Runs one operator check; `None` when it passed, otherwise why not.
async fn run_check(conn: &mut PgConnection, sql: &str) -> Option<String> {
    let short: String = sql.split_whitespace().collect::<Vec<_>>().join(" ").chars().take(120).collect();
    let row = match sqlx::query(sql).fetch_optional(&mut *conn).await {
        Err(e) => return Some(format!("verification query failed: {short}: {e}")),
        Ok(None) => return Some(format!("verification query returned no rows: {short}")),
        Ok(Some(r)) => r,
    };
    if row.columns().is_empty() {
        return Some(format!("verification query returned no columns: {short}"));
    }
    let ty = row.column(0).type_info().name().to_string();
    let verdict = match ty.as_str() {
        "BOOL" => row.try_get::<Option<bool>, _>(0).ok().flatten(),
        "INT2" => row.try_get::<Option<i16>, _>(0).ok().flatten().map(|v| v != 0),
        "INT4" => row.try_get::<Option<i32>, _>(0).ok().flatten().map(|v| v != 0),
        "INT8" => row.try_get::<Option<i64>, _>(0).ok().flatten().map(|v| v != 0),
        "FLOAT4" | "FLOAT8" => row.try_get::<Option<f64>, _>(0).ok().flatten().map(|v| v != 0.0),
        _ => match row.try_get_raw(0) {
            Ok(v) if sqlx::ValueRef::is_null(&v) => None,
            Ok(_) => Some(true),
            Err(_) => None,
        },
    };
    match verdict {
        Some(true) => None,
        Some(false) => Some(format!("verification query returned false or 0: {short}")),
        None => Some(format!("verification query returned NULL: {short}")),
    }
}

/// One post-restore check that runs on its own (any connection, any order).
#[derive(Debug)]
enum Check {
    /// `count(*)` of a table must equal the rows the dump held.
    Rows { table: String, expected: u64 },
    /// `bt_index_check` of a btree index.
    Index(String),
}

impl Check {
    /// `None` when it passed, otherwise why not.
    async fn run(&self, conn: &mut PgConnection) -> Option<String> {
        match self {
            Check::Rows { table, expected } => {
                let q = format!("SELECT count(*) FROM ONLY {table}");
                match sqlx::query_scalar::<_, i64>(&q).fetch_one(&mut *conn).await {
                    Ok(n) if n as u64 == *expected => None,
                    Ok(n) => Some(format!(
                        "table {table} has {n} rows after restore, the manifest recorded {expected}"
                    )),
                    Err(e) => Some(format!("table {table} could not be counted after restore: {e}")),
                }
            }
            Check::Index(index) => sqlx::query("SELECT bt_index_check($1::regclass)")
                .bind(index)
                .execute(&mut *conn)
                .await
                .err()
                .map(|e| format!("index {index} failed amcheck: {e}")),
        }
    }
}

/// Most connections the row counts and index checks are spread over. They read the whole
/// restored database, so they run in parallel: otherwise they add seconds to every verification.
fn check_connections() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get()).clamp(1, 4)
}

/// Work shared by the check connections: each takes the next check until none are left.
type CheckQueue = std::sync::Mutex<std::collections::VecDeque<(usize, Check)>>;

/// Runs checks from `queue` on `conn` until it is empty; returns the failures with their positions.
async fn drain(conn: &mut PgConnection, queue: &CheckQueue) -> Vec<(usize, String)> {
    let mut failed = Vec::new();
    loop {
        let next = queue.lock().ok().and_then(|mut q| q.pop_front());
        let Some((i, check)) = next else { break };
        if let Some(why) = check.run(conn).await {
            failed.push((i, why));
        }
    }
    failed
}

/// Runs `todo` on `first` plus up to `extra` more connections to `url`; returns the failures in
/// the order of `todo`. A connection that cannot be opened only means less parallelism.
async fn run_checks(first: &mut PgConnection, url: &DbUrl, todo: Vec<Check>, extra: usize) -> Vec<String> {
    let queue: CheckQueue = std::sync::Mutex::new(todo.into_iter().enumerate().collect());
    let helpers = futures::future::join_all((0..extra).map(|_| async {
        let Ok(mut conn) = pg::connect(url).await else {
            return Vec::new();
        };
        let failed = drain(&mut conn, &queue).await;
        pg::close(conn).await;
        failed
    }));
    let (mut failed, helped) = tokio::join!(drain(first, &queue), helpers);
    failed.extend(helped.into_iter().flatten());
    failed.sort_by_key(|(i, _)| *i);
    failed.into_iter().map(|(_, why)| why).collect()
}

/// Post-restore checks on the scratch database.
async fn checks(conn: &mut PgConnection, url: &DbUrl, m: &Manifest, queries: &[String]) -> (Vec<String>, Option<u64>) {
    // Largest tables first (indexes come by size from the catalog), so the longest checks do not
    // start last.
    let mut tables: Vec<(&String, &u64)> = m.tables.iter().collect();
    tables.sort_by_key(|(_, rows)| std::cmp::Reverse(**rows));
    let mut todo: Vec<Check> = tables
        .into_iter()
        .map(|(table, expected)| Check::Rows {
            table: table.clone(),
            expected: *expected,
        })
        .collect();
    // amcheck is optional: only when the extension can be created on this server.
    if sqlx::query("CREATE EXTENSION IF NOT EXISTS amcheck")
        .execute(&mut *conn)
        .await
        .is_ok()
    {
        let indexes: Result<Vec<String>, _> = sqlx::query_scalar(
            "SELECT c.oid::regclass::text FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_am a ON a.oid = c.relam \
             JOIN pg_namespace n ON n.oid = c.relnamespace WHERE a.amname = 'btree' AND n.nspname NOT IN ('pg_catalog', 'information_schema') \
             AND n.nspname NOT LIKE 'pg_toast%' AND i.indisvalid ORDER BY c.relpages DESC, 1",
        )
        .fetch_all(&mut *conn)
        .await;
        todo.extend(indexes.unwrap_or_default().into_iter().map(Check::Index));
    }
    let extra = check_connections().min(todo.len()).saturating_sub(1);
    let mut reasons = run_checks(conn, url, todo, extra).await;
    for q in queries {
        if let Some(r) = run_check(conn, q).await {
            reasons.push(r);
        }
    }
    let size: Option<i64> = sqlx::query_scalar("SELECT pg_database_size(current_database())")
        .fetch_one(&mut *conn)
        .await
        .ok();
    (reasons, size.map(|s| s as u64))
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
    fn failed(reason: String) -> Self {
        Self {
            reasons: vec![reason],
            restore_secs: 0.0,
            checks_secs: 0.0,
            restored_bytes: None,
            tables_checked: 0,
        }
    }
}

/// Restores into the (already created) scratch database and runs the checks.
async fn restore_and_check(
    ctx: &VerifyContext,
    key: &Key,
    m: &Manifest,
    psql_tool: &pg::Tool,
    scratch_url: &DbUrl,
    queries: &[String],
    cancel: &CancellationToken,
) -> Result<Verdict, VerifyError> {
    let t0 = Instant::now();
    let (mut reasons, psql_failure) = match restore_into(ctx.storage.as_ref(), key, Some(m), psql_tool, scratch_url, None, cancel).await {
        Ok(r) => r,
        Err(StreamError::Cancelled) => return Err(VerifyError::Cancelled),
        Err(StreamError::Storage(e)) => return Err(e.into()),
        Err(StreamError::Pg(e)) => return Err(e.into()),
    };
    let restore_secs = t0.elapsed().as_secs_f64();
    if let Some(f) = psql_failure {
        // Too old a psql, or psql losing the verify server, says nothing about the backup.
        if f.contains("too old to read the dump") || f.starts_with("psql lost its connection") {
            return Err(VerifyError::CouldNotRun(f));
        }
        reasons.push(f);
    }
    if !reasons.is_empty() {
        return Ok(Verdict {
            reasons,
            restore_secs,
            checks_secs: 0.0,
            restored_bytes: None,
            tables_checked: 0,
        });
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
    let verdict = match manifest::read(ctx.storage.as_ref(), &ctx.layout, id).await? {
        None => Verdict::failed("the manifest is missing: the backup did not complete or was not written by pgvigil".into()),
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
    let psql_tool = psql::find_psql(ctx.tools.psql.as_deref(), dump_major).await?;
    let queries = match &ctx.cfg.queries_file {
        Some(f) => split_statements(
            &std::fs::read_to_string(f)
                .map_err(|e| VerifyError::CouldNotRun(format!("cannot read VERIFY_QUERIES_FILE {}: {e}", f.display())))?,
        ),
        None => Vec::new(),
    };
    let admin_url = &ctx.cfg.database_url;
    let mut admin = pg::connect(admin_url).await?;
    let name = scratch_name(id);
    drop_scratch(&mut admin, &name).await?;
    if let Err(e) = sqlx::query(&format!("CREATE DATABASE \"{name}\" TEMPLATE template0 ENCODING 'UTF8'"))
        .execute(&mut admin)
        .await
    {
        return Err(VerifyError::CouldNotRun(format!(
            "could not create scratch database {name} (the role needs CREATEDB): {}",
            pg::classify(admin_url, &e)
        )));
    }
    let scratch_url = admin_url.with_database(&name);
    // From here on the scratch database exists: whatever happens, drop it.
    let outcome = restore_and_check(ctx, key, m, &psql_tool, &scratch_url, &queries, cancel).await;
    if let Err(e) = drop_scratch(&mut admin, &name).await {
        warn!(error = %e, "scratch database not dropped; it will be cleaned at the next start");
    }
    pg::close(admin).await;
    outcome
}

async fn choose_and_verify(
    ctx: &VerifyContext,
    only: Option<BackupId>,
    cancel: &CancellationToken,
) -> Result<VerificationRecord, VerifyError> {
    let id = match only {
        Some(id) => id,
        None => {
            let cat = Catalog::load(ctx.storage.as_ref(), &ctx.layout).await?;
            let (roll, pick) = (rand::random::<f64>(), rand::random::<f64>());
            choose(&cat, ctx.cfg.random_rate, roll, pick).ok_or(VerifyError::NothingToVerify)?
        }
    };
    let rec = verify_backup(ctx, id, cancel).await?;
    if let Err(e) = write_verification(ctx.storage.as_ref(), &ctx.layout, id, &rec).await {
        warn!(error = %e, "could not store the verification record");
    }
    Ok(rec)
}

/// Chooses a backup, verifies it, stores the record and logs the operator-facing lines.
///
/// # Errors
/// [`VerifyError`] when no verification could run (logged as `Verification could not run`).
pub async fn run_and_log(
    ctx: &VerifyContext,
    only: Option<BackupId>,
    cancel: &CancellationToken,
) -> Result<VerificationRecord, VerifyError> {
    let started = Instant::now();
    let result = choose_and_verify(ctx, only, cancel).await;
    match &result {
        Ok(rec) if rec.passed => info!(
            key = %rec.key,
            tables = rec.tables_checked,
            restored_bytes = rec.restored_bytes.unwrap_or(0),
            restore_secs = format!("{:.1}", rec.restore_secs),
            checks_secs = format!("{:.1}", rec.checks_secs),
            "Restore verification completed successfully"
        ),
        Ok(rec) => error!(key = %rec.key, reasons = %rec.reasons.join("; "), "Restore verification failed"),
        Err(VerifyError::NothingToVerify) => info!("Verification could not run: there is no complete backup to verify yet"),
        Err(e) => error!("Verification could not run: {e}"),
    }
    info!("Verification finished in {:.1}s", started.elapsed().as_secs_f64());
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::BackupEntry;
    use chrono::TimeZone;

    fn id(h: u32) -> BackupId {
        BackupId::at(Utc.with_ymd_and_hms(2026, 11, 25, h, 0, 0).unwrap())
    }

    fn catalog(ids: &[u32], verified: &[u32]) -> Catalog {
        let mut c = Catalog::default();
        for h in ids.iter().rev() {
            c.backups.push(BackupEntry {
                id: id(*h),
                key: String::new(),
                size: 1,
                complete: true,
            });
        }
        c.verifications = verified.iter().map(|h| (id(23), id(*h))).collect();
        c
    }

    #[test]
    fn choose_prefers_the_newest_unverified_and_sometimes_an_older_one() {
        let cases = [
            (catalog(&[], &[]), 0.2, 0.9, 0.0, None),
            (catalog(&[1], &[]), 0.2, 0.0, 0.0, Some(1)),
            (catalog(&[1, 2, 3], &[]), 0.2, 0.9, 0.0, Some(3)),
            (catalog(&[1, 2, 3], &[]), 0.2, 0.1, 0.0, Some(2)),
            (catalog(&[1, 2, 3], &[]), 0.2, 0.1, 0.99, Some(1)),
            (catalog(&[1, 2, 3], &[3]), 0.0, 0.9, 0.99, Some(1)),
            (catalog(&[1, 2, 3], &[]), 0.0, 0.0, 0.5, Some(3)),
        ];
        for (cat, rate, roll, pick, want) in cases {
            assert_eq!(choose(&cat, rate, roll, pick), want.map(id), "rate {rate} roll {roll} pick {pick}");
        }
    }

    #[test]
    fn scratch_names_are_prefixed_and_safe() {
        let n = scratch_name(id(5));
        assert_eq!(n, "pgvigil_verify_2026_11_25t05_00_00z");
        assert!(n.len() < 63);
    }

    #[test]
    fn statements_split_outside_quotes_and_comments() {
        let sql =
            "-- a comment; with semicolon\nSELECT 1;\nSELECT 'a;b' = 'a;b';\nSELECT $$x;y$$ <> '';\nSELECT count(*) > 0 FROM \"t;\"\n";
        assert_eq!(
            split_statements(sql),
            vec![
                "SELECT 1",
                "SELECT 'a;b' = 'a;b'",
                "SELECT $$x;y$$ <> ''",
                "SELECT count(*) > 0 FROM \"t;\""
            ]
        );
    }
}
