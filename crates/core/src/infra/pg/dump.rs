//! Starting `pg_dump` for a plain-SQL dump of one database.

use super::{child_env, connect, find_tool, server_version, OwnedChild, PgError, PgVersion, Tool};
use crate::infra::secret::DbUrl;
use std::path::Path;

/// Options pgvigil always passes: plain SQL that restores on a scratch server lacking the
/// source's roles (no ownership or privilege statements) and its tablespaces (a tablespace is a
/// directory of one server; a restore elsewhere puts everything in the default one), never
/// prompting for a password.
pub const DEFAULT_ARGS: &[&str] = &[
    "--format=plain",
    "--no-owner",
    "--no-privileges",
    "--no-tablespaces",
    "--no-password",
];

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
    })
}

/// Starts `pg_dump`; its stdout is the dump.
///
/// # Errors
/// When the process cannot be started.
pub fn spawn(plan: &DumpPlan, url: &DbUrl, extra: &[String]) -> Result<OwnedChild, PgError> {
    let mut args: Vec<String> = DEFAULT_ARGS.iter().map(|s| (*s).to_string()).collect();
    args.extend(extra.iter().cloned());
    OwnedChild::spawn("pg_dump", &plan.tool.path, &args, &child_env(url), false)
        .map_err(|e| PgError::Spawn(format!("cannot start {}: {e}", plan.tool.path.display())))
}
