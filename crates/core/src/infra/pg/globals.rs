//! The cluster's roles, saved next to each backup: `pg_dumpall --globals-only --no-role-passwords
//! --no-tablespaces`. Without role passwords it runs on managed servers that hide `pg_authid`;
//! without tablespaces it restores on any server. (Reading it back is pure parsing, in
//! `pipeline::stages::dumpscan::roles`.)

use super::{child_env, find_tool, OwnedChild, PgError, PgVersion, Tool};
use crate::infra::secret::DbUrl;
use std::path::Path;
use tokio::io::AsyncReadExt;

/// Largest globals file accepted (a cluster with tens of thousands of roles stays far below).
pub const MAX_GLOBALS: u64 = 64 * 1024 * 1024;

/// Finds a `pg_dumpall` for this server: next to an explicit `PG_DUMP_PATH`, else as `pg_dump` is found.
///
/// # Errors
/// No suitable `pg_dumpall`.
pub async fn find(server: PgVersion, pg_dump: Option<&Path>) -> Result<Tool, PgError> {
    let sibling = pg_dump.and_then(Path::parent).map(|d| d.join("pg_dumpall")).filter(|p| p.is_file());
    find_tool(
        "pg_dumpall",
        sibling.as_deref(),
        server.major,
        &format!("saving the roles of a PostgreSQL {server} server"),
    )
    .await
}

/// Longest `pg_dumpall` may take: the roles of any cluster are read in seconds.
const TIMEOUT: std::time::Duration = std::time::Duration::from_secs(120);

/// Runs `pg_dumpall` for the roles of the server `url` points at (connecting to `url`'s database),
/// giving up after two minutes or when `cancel` fires.
///
/// # Errors
/// It could not start, failed, took too long, or wrote more than [`MAX_GLOBALS`].
pub async fn dump(tool: &Tool, url: &DbUrl, cancel: &tokio_util::sync::CancellationToken) -> Result<Vec<u8>, PgError> {
    tokio::select! {
        r = tokio::time::timeout(TIMEOUT, run(tool, url)) => r.unwrap_or_else(|_| Err(PgError::Spawn("pg_dumpall did not finish within two minutes".into()))),
        () = cancel.cancelled() => Err(PgError::Spawn("interrupted by shutdown".into())),
    }
}

async fn run(tool: &Tool, url: &DbUrl) -> Result<Vec<u8>, PgError> {
    let args: Vec<String> = [
        "--globals-only",
        "--no-role-passwords",
        "--no-tablespaces",
        "--no-password",
        "-l",
        &url.database(),
    ]
    .iter()
    .map(|s| (*s).to_string())
    .collect();
    let mut child = OwnedChild::spawn("pg_dumpall", &tool.path, &args, &child_env(url), false)
        .map_err(|e| PgError::Spawn(format!("cannot start {}: {e}", tool.path.display())))?;
    let mut out = Vec::new();
    if let Some(stdout) = child.take_stdout() {
        stdout
            .take(MAX_GLOBALS + 1)
            .read_to_end(&mut out)
            .await
            .map_err(|e| PgError::Spawn(format!("reading pg_dumpall's output: {e}")))?;
    }
    if out.len() as u64 > MAX_GLOBALS {
        child.kill().await;
        return Err(PgError::Spawn(format!("pg_dumpall wrote more than {MAX_GLOBALS} bytes of roles")));
    }
    child.wait().await.map_err(|f| PgError::Dump(super::DumpFailure::Failed(f)))?;
    Ok(out)
}
