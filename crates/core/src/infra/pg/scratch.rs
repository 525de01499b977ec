//! The SQL that manages pgvigil's scratch databases on the verify server. Every function here
//! refuses to touch a database whose name does not start with [`PREFIX`]: nothing else on that
//! server is ever created or dropped.

use super::{classify, PgError};
use crate::infra::secret::DbUrl;
use sqlx::postgres::PgConnection;

/// Every scratch database pgvigil creates starts with this; it drops only such databases.
pub const PREFIX: &str = "pgvigil_verify_";

/// Whether `name` is one of ours and safe to use unquoted-or-quoted in SQL.
pub fn is_scratch_name(name: &str) -> bool {
    name.starts_with(PREFIX) && name.len() < 64 && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

fn refuse(name: &str) -> PgError {
    PgError::Rejected(format!("refusing to touch {name:?}: not a pgvigil scratch database"))
}

/// Names of every scratch database on the server.
///
/// # Errors
/// Connection or query failures.
pub async fn list(conn: &mut PgConnection, url: &DbUrl) -> Result<Vec<String>, PgError> {
    let names: Vec<String> = sqlx::query_scalar("SELECT datname::text FROM pg_database WHERE starts_with(datname, $1) ORDER BY 1")
        .bind(PREFIX)
        .fetch_all(&mut *conn)
        .await
        .map_err(|e| classify(url, &e))?;
    Ok(names)
}

/// Drops a scratch database (forcing off any session still in it).
///
/// # Errors
/// A name that is not a scratch name, or the server's refusal.
pub async fn drop(conn: &mut PgConnection, url: &DbUrl, name: &str) -> Result<(), PgError> {
    if !is_scratch_name(name) {
        return Err(refuse(name));
    }
    sqlx::query(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
        .execute(&mut *conn)
        .await
        .map_err(|e| classify(url, &e))?;
    Ok(())
}

/// Creates an empty scratch database from `template0` in UTF8.
///
/// # Errors
/// A name that is not a scratch name, or the server's refusal (the role needs CREATEDB).
pub async fn create(conn: &mut PgConnection, url: &DbUrl, name: &str) -> Result<(), PgError> {
    if !is_scratch_name(name) {
        return Err(refuse(name));
    }
    sqlx::query(&format!("CREATE DATABASE \"{name}\" TEMPLATE template0 ENCODING 'UTF8'"))
        .execute(&mut *conn)
        .await
        .map_err(|e| classify(url, &e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_our_own_names_are_scratch_names() {
        let cases = [
            ("pgvigil_verify_2026_11_25t05_00_00z", true),
            ("pgvigil_verify_crashed", true),
            ("pgvigil_verif", false),
            ("my_pgvigil_verify_x", false),
            ("pgvigil_verify_\"; drop database app; --", false),
            ("pgvigil_verify_UPPER", false),
        ];
        for (name, want) in cases {
            assert_eq!(is_scratch_name(name), want, "{name}");
        }
    }
}
