//! Post-restore checks on the scratch database: every table's exact row count against the
//! manifest, `amcheck` on the B-tree indexes it applies to, then the operator's queries. Counts and
//! index checks read whole tables, so they are spread over a few connections, largest first.
//!
//! Each check says whom a failure blames: a count that differs, or an operator check that fails,
//! blames the backup; a lost connection, a full disk or a missing privilege blames the environment
//! ([`CouldNotRun`]). Counts see every row: the scratch database is pgvigil's own, so `FORCE ROW
//! LEVEL SECURITY` is lifted there first, and the counting sessions run with `row_security = off`,
//! which makes any policy that would still hide rows an error instead of a silently short count.

use super::queries::{run_user_check, UserCheck};
use super::CouldNotRun;
use crate::infra::config::Amcheck;
use crate::infra::pg::{self, PgError, SqlState};
use crate::infra::secret::DbUrl;
use crate::records::history::{Cause, Evidence, IndexEvidence, Reason, SkippedIndex, TableEvidence};
use crate::records::manifest::Manifest;
use sqlx::postgres::PgConnection;
use std::sync::Mutex;

/// One check that runs on its own (any connection, any order).
#[derive(Debug)]
enum Check {
    /// `count(*)` of a table (its position in the evidence's table list; every table the
    /// manifest lists).
    Rows {
        table: String,
        slot: usize,
        listed: std::sync::Arc<[String]>,
    },
    /// `bt_index_check` of a B-tree index, with the schema amcheck lives in.
    Index { index: String, schema: String, heap: bool },
}

/// What a check found when it ran.
enum Finding {
    /// Rows counted, for the table in this slot.
    Rows { slot: usize, count: u64 },
    /// The index passed.
    IndexOk(String),
    /// The check failed in a way that blames the backup.
    Failed(String),
}

/// A failure of the environment while checking `what`.
fn environment(what: String, source: PgError) -> CouldNotRun {
    CouldNotRun::Check { what, source }
}

/// Whom a failed statement blames: the environment (`Err`) or the backup (`Ok`, with a reason).
/// `what` names the work, e.g. "counting the rows of table t".
pub(super) fn blame(what: String, e: PgError) -> Result<String, CouldNotRun> {
    match &e {
        PgError::Sql { state, .. } if state.environment_cause().is_none() => Ok(format!("{what} failed: {e}")),
        _ => Err(environment(what, e)),
    }
}

/// The rows of partitioned `table`'s tree that are in no partition the manifest lists on its own
/// (`listed`): those pg_dump loaded through it. Each such partition is counted alone.
async fn unlisted_rows(conn: &mut PgConnection, table: &str, listed: &[String]) -> Result<i64, sqlx::Error> {
    let leaves: Vec<String> = sqlx::query_scalar(
        "SELECT pg_catalog.quote_ident(n.nspname) || '.' || pg_catalog.quote_ident(c.relname) \
         FROM pg_catalog.pg_partition_tree($1::pg_catalog.regclass) t \
         JOIN pg_catalog.pg_class c ON c.oid = t.relid JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
         WHERE t.isleaf AND c.oid <> ALL (ARRAY( \
           SELECT pg_catalog.to_regclass(x)::pg_catalog.oid FROM pg_catalog.unnest($2::pg_catalog.text[]) AS x \
           WHERE pg_catalog.to_regclass(x) IS NOT NULL))",
    )
    .bind(table)
    .bind(listed)
    .fetch_all(&mut *conn)
    .await?;
    let mut total = 0i64;
    for leaf in leaves {
        let n: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM ONLY {leaf}"))
            .fetch_one(&mut *conn)
            .await?;
        total = total.saturating_add(n);
    }
    Ok(total)
}

impl Check {
    async fn run(&self, conn: &mut PgConnection, url: &DbUrl) -> Result<Finding, CouldNotRun> {
        match self {
            Check::Rows { table, slot, listed } => {
                // A partitioned table holds rows only when the dump loaded partitions through it
                // (`--load-via-partition-root`, which pg_dump chooses itself for the partitions of
                // a table hash-partitioned on an enum, wherever it sits in the tree, while the
                // tree's other partitions load on their own): then count the rows of its tree
                // that are in no partition the manifest lists on its own. Anything else is
                // counted alone, as it was dumped.
                // The name comes from the manifest: the server resolves it (as a parameter) and
                // quotes it, so that only the relation it names is ever read.
                let resolved = sqlx::query_as::<_, (bool, String)>(
                    "SELECT c.relkind = 'p', pg_catalog.quote_ident(n.nspname) || '.' || pg_catalog.quote_ident(c.relname) \
                     FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
                     WHERE c.oid OPERATOR(pg_catalog.=) $1::pg_catalog.regclass::pg_catalog.oid",
                )
                .bind(table)
                .fetch_optional(&mut *conn)
                .await;
                let counted = match resolved {
                    // (A name such as `-` reads as no relation at all.)
                    Ok(None) => return Ok(Finding::Failed(format!("the manifest's table {table} names no relation"))),
                    Ok(Some((true, _))) => unlisted_rows(conn, table, listed).await,
                    Ok(Some((false, name))) => {
                        sqlx::query_scalar::<_, i64>(&format!("SELECT count(*) FROM ONLY {name}"))
                            .fetch_one(&mut *conn)
                            .await
                    }
                    Err(e) => Err(e),
                };
                match counted {
                    Ok(n) => Ok(Finding::Rows {
                        slot: *slot,
                        count: u64::try_from(n).unwrap_or(0),
                    }),
                    Err(e) => blame(format!("counting the rows of table {table}"), pg::classify(url, &e)).map(Finding::Failed),
                }
            }
            Check::Index { index, schema, heap } => {
                let q = format!("SELECT \"{}\".bt_index_check($1::regclass, $2)", schema.replace('"', "\"\""));
                match sqlx::query(&q).bind(index).bind(*heap).execute(&mut *conn).await {
                    Ok(_) => Ok(Finding::IndexOk(index.clone())),
                    // An index the restore just built from the data cannot be the backup's fault:
                    // corruption here points at the verify server (hardware, collation, a bug).
                    Err(e) => Err(environment(format!("checking index {index} with amcheck"), pg::classify(url, &e))),
                }
            }
        }
    }
}

/// Most connections the counts and index checks are spread over.
fn check_connections() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get()).clamp(1, 4)
}

/// Prepares a session for counting: policies may not hide rows silently.
async fn counting_session(conn: &mut PgConnection, url: &DbUrl) -> Result<(), CouldNotRun> {
    // A role's statement_timeout (common on managed servers) must not cut a count of a big table.
    // Only the system catalog is on the path: a function or operator the backup defined (in
    // `public`, say) cannot stand in for one of the catalog's in pgvigil's own queries.
    for setting in [
        "SET row_security = off",
        "SET statement_timeout = 0",
        "SET lock_timeout = 0",
        "SET search_path = pg_catalog",
    ] {
        sqlx::query(setting)
            .execute(&mut *conn)
            .await
            .map_err(|e| environment("setting up the counting session".into(), pg::classify(url, &e)))?;
    }
    Ok(())
}

/// Runs checks from `queue` on `conn` until it is empty or one blames the environment.
async fn drain(conn: &mut PgConnection, url: &DbUrl, queue: &Mutex<Vec<Check>>) -> Result<Vec<Finding>, CouldNotRun> {
    let mut found = Vec::new();
    loop {
        let next = queue.lock().ok().and_then(|mut q| q.pop());
        let Some(check) = next else { break };
        match check.run(conn, url).await {
            Ok(f) => found.push(f),
            Err(e) => {
                // The other connections stop at their next check.
                if let Ok(mut q) = queue.lock() {
                    q.clear();
                }
                return Err(e);
            }
        }
    }
    Ok(found)
}

/// Runs `todo` (popped from the end) on `first` plus up to `extra` more connections to `url`.
async fn run_parallel(first: &mut PgConnection, url: &DbUrl, todo: Vec<Check>, extra: usize) -> Result<Vec<Finding>, CouldNotRun> {
    let queue = Mutex::new(todo);
    let helpers = futures::future::join_all((0..extra).map(|_| async {
        // A connection that cannot be opened only means less parallelism.
        let Ok(mut conn) = pg::connect(url).await else {
            return Ok(Vec::new());
        };
        let found = match counting_session(&mut conn, url).await {
            Ok(()) => drain(&mut conn, url, &queue).await,
            Err(_) => Ok(Vec::new()),
        };
        pg::close(conn).await;
        found
    }));
    let (mine, theirs) = tokio::join!(drain(first, url, &queue), helpers);
    let mut all = mine?;
    for t in theirs {
        all.extend(t?);
    }
    Ok(all)
}

/// Lifts `FORCE ROW LEVEL SECURITY` on every table of the scratch database that has it, so that
/// its owner (the verify role, which restored it) counts every row. Returns those tables.
async fn lift_forced_row_security(conn: &mut PgConnection, url: &DbUrl) -> Result<Vec<String>, CouldNotRun> {
    let forced: Vec<String> = sqlx::query_scalar(
        "SELECT pg_catalog.quote_ident(n.nspname) || '.' || pg_catalog.quote_ident(c.relname) FROM pg_catalog.pg_class c \
         JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace WHERE c.relforcerowsecurity ORDER BY 1",
    )
    .fetch_all(&mut *conn)
    .await
    .map_err(|e| environment("listing the tables with row-level security".into(), pg::classify(url, &e)))?;
    for t in &forced {
        // Not the owner: the count under `row_security = off` will then say so.
        let _ = sqlx::query(&format!("ALTER TABLE {t} NO FORCE ROW LEVEL SECURITY"))
            .execute(&mut *conn)
            .await;
    }
    Ok(forced)
}

/// Makes amcheck available and sorts the indexes into those it applies to and those it does not.
async fn plan_index_checks(conn: &mut PgConnection, url: &DbUrl, mode: Amcheck) -> Result<(IndexEvidence, Vec<Check>), CouldNotRun> {
    let mut ev = IndexEvidence {
        mode: mode.as_str().into(),
        ..IndexEvidence::default()
    };
    if mode == Amcheck::Off {
        ev.not_run = Some("VERIFY_AMCHECK=off".into());
        return Ok((ev, Vec::new()));
    }
    if let Err(e) = sqlx::query("CREATE EXTENSION IF NOT EXISTS amcheck").execute(&mut *conn).await {
        let state = SqlState::of(&e);
        let reason = match (state.as_ref().map(|s| s.0.as_str()), pg::classify(url, &e)) {
            (Some(SqlState::INSUFFICIENT_PRIVILEGE), _) => {
                "the verify role may not create the amcheck extension (it needs superuser); see docs/configuration.md, VERIFY_AMCHECK"
                    .to_string()
            }
            (Some(SqlState::FEATURE_NOT_SUPPORTED | SqlState::UNDEFINED_FILE), _) => {
                "amcheck is not installed on the verify server (PostgreSQL's contrib package provides it)".to_string()
            }
            (_, other) if other.is_retryable() => return Err(environment("creating amcheck".into(), other)),
            (_, other) => format!("amcheck could not be created: {other}"),
        };
        ev.not_run = Some(reason);
        return Ok((ev, Vec::new()));
    }
    let schema: String = sqlx::query_scalar(
        "SELECT n.nspname::text FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace WHERE e.extname = 'amcheck'",
    )
    .fetch_one(&mut *conn)
    .await
    .map_err(|e| environment("finding amcheck's schema".into(), pg::classify(url, &e)))?;
    let rows: Vec<(String, String, String, bool)> = sqlx::query_as(
        "SELECT quote_ident(n.nspname) || '.' || quote_ident(c.relname), a.amname::text, c.relkind::text, i.indisvalid \
         FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_am a ON a.oid = c.relam \
         JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname !~ '^pg_(toast|temp)' \
         ORDER BY c.relpages, 1",
    )
    .fetch_all(&mut *conn)
    .await
    .map_err(|e| environment("listing the indexes".into(), pg::classify(url, &e)))?;
    let mut todo = Vec::new();
    for (index, am, kind, valid) in rows {
        let skip = if kind == "I" {
            Some("partitioned index: it has no storage of its own; its partitions' indexes are checked".to_string())
        } else if am != "btree" {
            Some(format!("{am} index: amcheck checks B-tree indexes only"))
        } else if !valid {
            Some("not valid (an interrupted CREATE INDEX CONCURRENTLY)".to_string())
        } else {
            None
        };
        match skip {
            Some(reason) => ev.skipped.push(SkippedIndex { index, reason }),
            None => todo.push(Check::Index {
                index,
                schema: schema.clone(),
                heap: mode == Amcheck::Heap,
            }),
        }
    }
    Ok((ev, todo))
}

/// Runs every check on the scratch database; fills `evidence` and returns the reasons the backup
/// failed (empty when it passed) and the restored database's size.
///
/// # Errors
/// [`CouldNotRun`] when the environment, not the backup, made a check fail.
pub(super) async fn checks(
    conn: &mut PgConnection,
    url: &DbUrl,
    m: &Manifest,
    queries: &[String],
    amcheck: Amcheck,
    evidence: &mut Evidence,
) -> Result<(Vec<Reason>, Option<u64>), CouldNotRun> {
    counting_session(conn, url).await?;
    evidence.row_security_lifted = lift_forced_row_security(conn, url).await?;
    let (indexes, mut todo) = plan_index_checks(conn, url, amcheck).await?;
    evidence.indexes = indexes;
    // Largest tables last in the list: the queue is popped from the end, so they start first.
    let mut tables: Vec<(&String, &u64)> = m.tables.iter().collect();
    tables.sort_by_key(|(_, rows)| **rows);
    evidence.tables = tables
        .iter()
        .map(|(table, rows)| TableEvidence {
            table: (*table).clone(),
            manifest_rows: **rows,
            restored_rows: None,
        })
        .collect();
    let listed: std::sync::Arc<[String]> = m.tables.keys().cloned().collect();
    todo.extend(evidence.tables.iter().enumerate().map(|(slot, t)| Check::Rows {
        table: t.table.clone(),
        slot,
        listed: listed.clone(),
    }));
    let extra = check_connections().min(todo.len()).saturating_sub(1);
    let mut checked = Vec::new();
    let mut failures = Vec::new();
    for finding in run_parallel(conn, url, todo, extra).await? {
        match finding {
            Finding::Rows { slot, count } => evidence.tables[slot].restored_rows = Some(count),
            Finding::IndexOk(index) => checked.push(index),
            Finding::Failed(why) => failures.push(why),
        }
    }
    checked.sort();
    evidence.indexes.checked = checked;
    let mut reasons: Vec<Reason> = evidence
        .tables
        .iter()
        .rev()
        .filter_map(|t| match t.restored_rows {
            Some(n) if n == t.manifest_rows => None,
            Some(n) => Some(Reason::new(
                Cause::RowCount,
                format!(
                    "table {} has {n} rows after restore, the manifest recorded {}",
                    t.table, t.manifest_rows
                ),
            )),
            None => None,
        })
        .collect();
    reasons.extend(failures.into_iter().map(|why| Reason::new(Cause::Check, why)));
    // The operator's own queries name things as the application does.
    sqlx::query("RESET search_path")
        .execute(&mut *conn)
        .await
        .map_err(|e| environment("setting up the session for the check queries".into(), pg::classify(url, &e)))?;
    for q in queries {
        let UserCheck { evidence: ev, failure } = run_user_check(conn, url, q).await?;
        reasons.extend(failure.map(|why| Reason::new(Cause::UserCheck, why)));
        evidence.user_checks.push(ev);
    }
    let size: Option<i64> = sqlx::query_scalar("SELECT pg_database_size(current_database())")
        .fetch_one(&mut *conn)
        .await
        .ok();
    Ok((reasons, size.and_then(|s| u64::try_from(s).ok())))
}
