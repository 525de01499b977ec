//! Post-restore checks on the scratch database: every table's exact row count against the
//! manifest, `amcheck` on B-tree indexes, then the operator's queries. Counts and index checks read
//! whole tables, so they are spread over a few connections, largest first.

use super::queries::run_check;
use crate::infra::pg;
use crate::infra::secret::DbUrl;
use crate::records::manifest::Manifest;
use sqlx::postgres::PgConnection;

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
pub(super) async fn checks(conn: &mut PgConnection, url: &DbUrl, m: &Manifest, queries: &[String]) -> (Vec<String>, Option<u64>) {
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
