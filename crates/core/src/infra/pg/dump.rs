//! Starting `pg_dump` for a plain-SQL dump of one database.

use super::{child_env, connect, find_tool, server_version, OwnedChild, PgError, PgVersion, Tool};
use crate::infra::secret::DbUrl;
use std::path::Path;

/// Options pgvigil always passes: plain SQL without tablespaces (a tablespace is a directory of
/// one server; a restore elsewhere puts everything in the default one), never prompting for a
/// password. Owners and grants are kept unless [`OMIT_PRIVILEGES`] is asked for.
pub const DEFAULT_ARGS: &[&str] = &["--format=plain", "--no-tablespaces", "--no-password"];

/// `BACKUP_PRIVILEGES=omit`: a dump without ownership and privilege statements.
pub const OMIT_PRIVILEGES: &[&str] = &["--no-owner", "--no-privileges"];

/// Facts gathered before dumping.
#[derive(Debug, Clone)]
pub struct DumpPlan {
    /// The pg_dump chosen for this server.
    pub tool: Tool,
    /// The server's version.
    pub server: PgVersion,
    /// Database name.
    pub database: String,
    /// The database's size on disk, when the server would tell.
    pub database_size: Option<u64>,
    /// The server's sessions start with `standard_conforming_strings` on (else pg_dump is told
    /// to turn it on).
    pub standard_strings: bool,
}

/// Connects to the server, reads its version and picks a `pg_dump` at least as new.
///
/// # Errors
/// Connection problems, or no suitable `pg_dump` (a sentence naming both versions).
pub async fn plan(url: &DbUrl, explicit: Option<&Path>) -> Result<DumpPlan, PgError> {
    let mut conn = connect(url).await?;
    let server = server_version(&mut conn, url).await?;
    let database_size = sqlx::query_scalar::<_, i64>("SELECT pg_database_size(current_database())")
        .fetch_one(&mut conn)
        .await
        .ok()
        .and_then(|n| u64::try_from(n).ok());
    let standard_strings = sqlx::query_scalar::<_, String>("SHOW standard_conforming_strings")
        .fetch_one(&mut conn)
        .await
        .map_or(true, |v| v == "on");
    super::close(conn).await;
    let tool = find_tool(
        "pg_dump",
        explicit,
        server.major,
        &format!("the database server runs PostgreSQL {server}, so backing it up"),
    )
    .await?;
    Ok(DumpPlan {
        tool,
        server,
        database: url.database(),
        database_size,
        standard_strings,
    })
}

/// How to call `pg_dump`, from the backup's settings.
#[derive(Debug, Clone, Copy)]
pub struct DumpOptions<'a> {
    /// `PG_DUMP_OPTIONS`, checked.
    pub extra: &'a [String],
    /// `PG_DUMP_LOCK_WAIT_TIMEOUT`.
    pub lock_wait: Option<std::time::Duration>,
    /// `BACKUP_PRIVILEGES=keep`.
    pub keep_privileges: bool,
}

/// Starts `pg_dump`; its stdout is the dump.
///
/// # Errors
/// When the process cannot be started.
pub fn spawn(plan: &DumpPlan, url: &DbUrl, opts: &DumpOptions<'_>, app_name: &str) -> Result<OwnedChild, PgError> {
    let DumpOptions {
        extra,
        lock_wait,
        keep_privileges,
    } = *opts;
    let mut args: Vec<String> = DEFAULT_ARGS.iter().map(|s| (*s).to_string()).collect();
    if !keep_privileges {
        args.extend(OMIT_PRIVILEGES.iter().map(|s| (*s).to_string()));
    }
    if let Some(wait) = lock_wait.filter(|_| !extra.iter().any(|a| a.starts_with("--lock-wait-timeout="))) {
        // Fail fast instead of queueing behind a lock (e.g. a migration's ALTER TABLE), which would
        // make every later query of the application queue behind pg_dump too.
        args.push(format!("--lock-wait-timeout={}ms", wait.as_millis()));
    }
    args.extend(extra.iter().cloned());
    let mut env = child_env(url);
    // Named, so that the watcher can find its session (see [`blocked_behind`]).
    env.retain(|(k, _)| k != "PGAPPNAME");
    env.push(("PGAPPNAME".into(), app_name.into()));
    if !plan.standard_strings {
        // pg_dump writes strings the way its session reads them; a restore accepts only
        // standard_conforming_strings on. Only then: a connection pooler may refuse options.
        let options = env
            .iter()
            .find(|(k, _)| k == "PGOPTIONS")
            .map(|(_, v)| v.clone())
            .unwrap_or_default();
        env.retain(|(k, _)| k != "PGOPTIONS");
        env.push((
            "PGOPTIONS".into(),
            format!("{options} -c standard_conforming_strings=on").trim().to_string(),
        ));
    }
    OwnedChild::spawn("pg_dump", &plan.tool.path, &args, &env, false)
        .map_err(|e| PgError::Spawn(format!("cannot start {}: {e}", plan.tool.path.display())))
}

/// Sessions waiting, directly or behind another waiter, for locks that the pg_dump named
/// `app_name` holds (a migration's `ALTER TABLE` waits for pg_dump, the application's queries
/// wait for the `ALTER`): how many, and the longest wait in seconds. Only sessions waiting for a
/// lock are examined, so the cost stays small on a busy server. The wait is read from `pg_locks`
/// (PostgreSQL 14 and later; 0 before), which any role may see.
///
/// # Errors
/// Query failures.
pub async fn blocked_behind(
    conn: &mut sqlx::postgres::PgConnection,
    url: &DbUrl,
    app_name: &str,
    server_major: u32,
) -> Result<(i64, f64), PgError> {
    let waited = if server_major >= 14 {
        "(SELECT max(extract(epoch FROM now() - l.waitstart)) FROM pg_locks l WHERE l.pid IN (SELECT pid FROM blocked) AND NOT l.granted)"
    } else {
        "0"
    };
    let sql = format!(
        "WITH RECURSIVE waiting AS (SELECT pid FROM pg_stat_activity WHERE wait_event_type = 'Lock'), \
         blocked(pid) AS ( \
           SELECT w.pid FROM waiting w WHERE EXISTS (SELECT 1 FROM pg_stat_activity d \
             WHERE d.application_name = $1 AND d.pid = ANY(pg_blocking_pids(w.pid))) \
           UNION \
           SELECT w.pid FROM waiting w, blocked b WHERE b.pid = ANY(pg_blocking_pids(w.pid))) \
         SELECT (SELECT count(*) FROM blocked), coalesce({waited}, 0)::float8"
    );
    sqlx::query_as(&sql)
        .bind(app_name)
        .fetch_one(&mut *conn)
        .await
        .map_err(|e| super::classify(url, &e))
}
