//! Starting `psql` to restore a plain-SQL dump read from its stdin, and classifying its failures.

use super::{child_env, find_tool, OwnedChild, PgError, Tool, ToolFailure};
use crate::secret::DbUrl;
use std::path::Path;

/// Picks a `psql` able to read a dump written by `pg_dump` of major `dump_major`.
///
/// # Errors
/// [`PgError::VersionSkew`] when only older ones exist.
pub async fn find_psql(explicit: Option<&Path>, dump_major: u32) -> Result<Tool, PgError> {
    find_tool(
        "psql",
        explicit,
        dump_major,
        &format!("restoring a dump written by pg_dump {dump_major}"),
    )
    .await
}

/// Starts `psql` on `url` that stops at the first error and applies the dump in one transaction.
///
/// # Errors
/// When the process cannot be started.
pub fn spawn(psql: &Tool, url: &DbUrl) -> Result<OwnedChild, PgError> {
    let args: Vec<String> = [
        "--no-psqlrc",
        "--quiet",
        "--no-password",
        "-v",
        "ON_ERROR_STOP=1",
        "--single-transaction",
    ]
    .iter()
    .map(|s| (*s).to_string())
    .collect();
    OwnedChild::spawn("psql", &psql.path, &args, &child_env(url), true)
        .map_err(|e| PgError::Other(format!("cannot start {}: {e}", psql.path.display())))
}

/// Explains a failed `psql` run in plain words (exit 3: an SQL error; 2: connection lost).
pub fn explain(f: &ToolFailure) -> String {
    let last = f
        .stderr
        .iter()
        .rev()
        .find(|l| l.contains("ERROR") || l.contains("FATAL") || l.contains("invalid command"))
        .or(f.stderr.last())
        .cloned()
        .unwrap_or_default();
    if f.stderr
        .iter()
        .any(|l| l.contains("invalid command \\restrict") || l.contains("invalid command \\unrestrict"))
    {
        return format!("this psql is too old to read the dump (it does not know \\restrict); install a newer PostgreSQL client or set PSQL_PATH: {last}");
    }
    match f.code {
        Some(3) => format!("the dump failed to restore: {last}"),
        Some(2) => format!("psql lost its connection to the server: {last}"),
        _ => format!("psql {}: {last}", f.status),
    }
}
