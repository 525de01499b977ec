//! The cluster's roles, saved next to each backup: `pg_dumpall --globals-only --no-role-passwords
//! --no-tablespaces`. Without role passwords it runs on managed servers that hide `pg_authid`;
//! without tablespaces it restores on any server. Reading it back, pgvigil only needs the role
//! names ([`role_names`]) and the statements that create one role ([`role_statements`]).

use super::{child_env, find_tool, OwnedChild, PgError, PgVersion, Tool};
use crate::infra::secret::DbUrl;
use std::path::Path;
use tokio::io::AsyncReadExt;

/// Largest globals file accepted (a cluster with tens of thousands of roles stays far below).
const MAX_GLOBALS: u64 = 64 * 1024 * 1024;

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

/// Runs `pg_dumpall` for the roles of the server `url` points at (connecting to `url`'s database).
///
/// # Errors
/// It could not start, failed, or wrote more than [`MAX_GLOBALS`].
pub async fn dump(tool: &Tool, url: &DbUrl) -> Result<Vec<u8>, PgError> {
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

/// Role names created by a globals file (`CREATE ROLE name;`, the name as pg_dumpall quoted it).
pub fn role_names(globals: &str) -> Vec<String> {
    globals
        .lines()
        .filter_map(|l| l.strip_prefix("CREATE ROLE ")?.strip_suffix(';'))
        .map(|n| n.trim().to_string())
        .collect()
}

/// The statements that create `role` with its attributes (`CREATE ROLE`, then its `ALTER ROLE …
/// WITH …` line), for a restore that creates missing roles.
pub fn role_statements(globals: &str, role: &str) -> Vec<String> {
    let create = format!("CREATE ROLE {role};");
    let alter = format!("ALTER ROLE {role} WITH ");
    globals
        .lines()
        .filter(|l| *l == create || l.starts_with(&alter))
        .map(String::from)
        .collect()
}

/// Role memberships (`GRANT a TO b …;`) among the globals' statements.
pub fn memberships(globals: &str) -> Vec<String> {
    globals
        .lines()
        .filter(|l| l.starts_with("GRANT ") && l.ends_with(';') && !l.contains(" ON "))
        .map(String::from)
        .collect()
}

/// Turns a role name as written in SQL (`app` or `"App Owner"`) into the name itself.
pub fn unquote(ident: &str) -> String {
    match ident.strip_prefix('"').and_then(|i| i.strip_suffix('"')) {
        Some(inner) => inner.replace("\"\"", "\""),
        None => ident.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GLOBALS: &str = "--\n-- Roles\n--\n\nCREATE ROLE app_owner;\nALTER ROLE app_owner WITH NOSUPERUSER INHERIT NOCREATEROLE NOCREATEDB LOGIN NOREPLICATION NOBYPASSRLS;\nCREATE ROLE \"Read Only\";\nALTER ROLE \"Read Only\" WITH NOSUPERUSER INHERIT NOCREATEROLE NOCREATEDB NOLOGIN NOREPLICATION NOBYPASSRLS;\nALTER ROLE app_owner SET search_path TO app;\n\n--\n-- Role memberships\n--\n\nGRANT \"Read Only\" TO app_owner GRANTED BY postgres;\n";

    #[test]
    fn roles_and_their_statements_are_read_back() {
        assert_eq!(role_names(GLOBALS), vec!["app_owner".to_string(), "\"Read Only\"".to_string()]);
        assert_eq!(role_statements(GLOBALS, "\"Read Only\"").len(), 2);
        assert!(role_statements(GLOBALS, "app_owner")[1].contains("LOGIN"));
        assert_eq!(
            memberships(GLOBALS),
            vec!["GRANT \"Read Only\" TO app_owner GRANTED BY postgres;".to_string()]
        );
        assert_eq!(unquote("\"Read \"\"Only\"\"\""), "Read \"Only\"");
        assert_eq!(unquote("app"), "app");
    }
}
