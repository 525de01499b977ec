//! The SQL that manages pgvigil's scratch databases on the verify server. Every function here
//! refuses to touch a database whose name does not start with [`PREFIX`]: nothing else on that
//! server is ever created or dropped.
//!
//! Several verifiers may share a server (a deploy overlaps the old instance with the new one):
//! each run names its database uniquely and holds a session advisory lock on that name for as long
//! as the database exists; clean-up drops only scratch databases whose lock nobody holds and that
//! no session is connected to.

use super::{classify, PgError};
use crate::infra::secret::DbUrl;
use sqlx::postgres::PgConnection;

/// Every scratch database pgvigil creates starts with this; it drops only such databases.
pub const PREFIX: &str = "pgvigil_verify_";

/// A database `pgvigil restore --create` is still building starts with this; it gets its name
/// only once the restore succeeded.
pub const BUILDING: &str = "pgvigil_building_";

/// Whether `name` is one of ours and safe to use unquoted-or-quoted in SQL.
pub fn is_scratch_name(name: &str) -> bool {
    (name.starts_with(PREFIX) || name.starts_with(BUILDING))
        && name.len() < 64
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

/// Advisory-lock class of scratch databases (`pgvg`); the object id is `hashtext(name)`.
const LOCK_CLASS: i32 = 0x7067_7667;

/// Marks `name` as in use for as long as this session lives (or until [`unlock`]). False when
/// another session holds it.
///
/// # Errors
/// Connection or query failures.
pub async fn lock(conn: &mut PgConnection, url: &DbUrl, name: &str) -> Result<bool, PgError> {
    sqlx::query_scalar("SELECT pg_try_advisory_lock($1, hashtext($2))")
        .bind(LOCK_CLASS)
        .bind(name)
        .fetch_one(&mut *conn)
        .await
        .map_err(|e| classify(url, &e))
}

/// Releases [`lock`].
///
/// # Errors
/// Connection or query failures.
pub async fn unlock(conn: &mut PgConnection, url: &DbUrl, name: &str) -> Result<(), PgError> {
    sqlx::query_scalar::<_, bool>("SELECT pg_advisory_unlock($1, hashtext($2))")
        .bind(LOCK_CLASS)
        .bind(name)
        .fetch_one(&mut *conn)
        .await
        .map(|_| ())
        .map_err(|e| classify(url, &e))
}

/// Keeps [`lock`] on `name` held through a long restore: pings the session holding it, and when
/// that session was lost (a proxy or `idle_session_timeout` cut it, and the lock went with it)
/// takes the lock again on a fresh session, before another verifier's clean-up can see it free.
/// `None` when the server cannot be reached or another session holds the lock now.
pub async fn keep(conn: Option<PgConnection>, url: &DbUrl, name: &str) -> Option<PgConnection> {
    if let Some(mut held) = conn {
        if sqlx::query("SELECT 1").execute(&mut held).await.is_ok() {
            return Some(held);
        }
    }
    let mut fresh = super::connect(url).await.ok()?;
    if matches!(lock(&mut fresh, url, name).await, Ok(true)) {
        return Some(fresh);
    }
    super::close(fresh).await;
    None
}

/// How often the session that holds a scratch database's lock is checked while it is in use.
const KEEP_LOCK: std::time::Duration = std::time::Duration::from_secs(60);

/// Runs `work` while [`keep`]ing the lock on `name` that `held` holds; what it gave, and the
/// session that holds the lock at the end (`None`: lost, and warned about).
pub async fn holding<T>(
    held: PgConnection,
    url: &DbUrl,
    name: &str,
    work: impl std::future::Future<Output = T>,
) -> (T, Option<PgConnection>) {
    tokio::pin!(work);
    let mut held = Some(held);
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + KEEP_LOCK, KEEP_LOCK);
    loop {
        tokio::select! {
            outcome = &mut work => return (outcome, held),
            _ = tick.tick() => {
                held = keep(held.take(), url, name).await;
                if held.is_none() {
                    tracing::warn!(database = %name, "lost the lock on the scratch database and could not take it again; a verifier starting now could drop it");
                }
            }
        }
    }
}

/// Drops every scratch database that no running verifier holds (its lock is free and nobody is
/// connected to it). Returns the names dropped. One that cannot be dropped (e.g. another role
/// owns it) is skipped with a warning: it must not stop the others, nor the verifier.
///
/// # Errors
/// Connection or query failures.
pub async fn drop_abandoned(conn: &mut PgConnection, url: &DbUrl) -> Result<Vec<String>, PgError> {
    drop_abandoned_with(conn, url, PREFIX).await
}

/// [`drop_abandoned`] for the databases whose names start with `prefix` ([`PREFIX`] or
/// [`BUILDING`]).
///
/// # Errors
/// Connection or query failures.
pub async fn drop_abandoned_with(conn: &mut PgConnection, url: &DbUrl, prefix: &str) -> Result<Vec<String>, PgError> {
    let mut dropped = Vec::new();
    for name in list_with(conn, url, prefix).await?.into_iter().filter(|n| is_scratch_name(n)) {
        // An advisory lock belongs to the database its session is in: one taken from another
        // database of the server is seen only in pg_locks.
        if held_anywhere(conn, url, &name).await? || !lock(conn, url, &name).await? {
            continue;
        }
        let sessions: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_stat_activity WHERE datname = $1")
            .bind(&name)
            .fetch_one(&mut *conn)
            .await
            .map_err(|e| classify(url, &e))?;
        let result = if sessions == 0 { drop(conn, url, &name).await } else { Ok(()) };
        unlock(conn, url, &name).await?;
        match result {
            Ok(()) if sessions == 0 => dropped.push(name),
            Ok(()) => {}
            Err(e) if e.is_retryable() => return Err(e),
            Err(e) => tracing::warn!(database = %name, error = %e, "a scratch database left behind could not be dropped; drop it by hand"),
        }
    }
    Ok(dropped)
}

/// Whether any session of the server, in any database, holds [`lock`] on `name`.
async fn held_anywhere(conn: &mut PgConnection, url: &DbUrl, name: &str) -> Result<bool, PgError> {
    sqlx::query_scalar(
        "SELECT EXISTS (SELECT FROM pg_catalog.pg_locks WHERE locktype = 'advisory' AND objsubid = 2 AND granted \
           AND classid = ($1::int8 & 4294967295)::oid AND objid = (hashtext($2)::int8 & 4294967295)::oid)",
    )
    .bind(i64::from(LOCK_CLASS))
    .bind(name)
    .fetch_one(&mut *conn)
    .await
    .map_err(|e| classify(url, &e))
}

fn refuse(name: &str) -> PgError {
    PgError::Rejected(format!("refusing to touch {name:?}: not a pgvigil scratch database"))
}

/// Names of every scratch database on the server.
///
/// # Errors
/// Connection or query failures.
pub async fn list(conn: &mut PgConnection, url: &DbUrl) -> Result<Vec<String>, PgError> {
    list_with(conn, url, PREFIX).await
}

async fn list_with(conn: &mut PgConnection, url: &DbUrl, prefix: &str) -> Result<Vec<String>, PgError> {
    let names: Vec<String> = sqlx::query_scalar("SELECT datname::text FROM pg_database WHERE starts_with(datname, $1) ORDER BY 1")
        .bind(prefix)
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
    let sql = format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)");
    let Err(e) = sqlx::query(&sql).execute(&mut *conn).await else {
        return Ok(());
    };
    // PostgreSQL will not drop a database that holds a subscription: versions of pgvigil that
    // restored a backup's subscriptions left scratch databases that could not be dropped.
    if !holds_subscriptions(conn, url, name).await? {
        return Err(classify(url, &e));
    }
    tracing::info!(
        database = name,
        "detaching the subscriptions an earlier pgvigil restored into this scratch database"
    );
    detach_subscriptions(url, name).await?;
    sqlx::query(&sql).execute(&mut *conn).await.map_err(|e| classify(url, &e))?;
    Ok(())
}

/// Whether the database `name` holds a logical-replication subscription.
async fn holds_subscriptions(conn: &mut PgConnection, url: &DbUrl, name: &str) -> Result<bool, PgError> {
    sqlx::query_scalar(
        "SELECT EXISTS (SELECT FROM pg_catalog.pg_subscription s JOIN pg_catalog.pg_database d ON d.oid = s.subdbid WHERE d.datname = $1)",
    )
    .bind(name)
    .fetch_one(&mut *conn)
    .await
    .map_err(|e| classify(url, &e))
}

/// Drops every subscription of the scratch database `name` without touching the publisher (its
/// slot is left alone: `slot_name = NONE` first). Needs a superuser, as creating them did.
async fn detach_subscriptions(url: &DbUrl, name: &str) -> Result<(), PgError> {
    let there = url.with_database(name).map_err(PgError::Rejected)?;
    let mut conn = super::connect(&there).await?;
    let done = sqlx::query(
        "DO $pgvigil$ DECLARE r record; BEGIN \
           FOR r IN SELECT s.subname FROM pg_catalog.pg_subscription s \
             WHERE s.subdbid = (SELECT d.oid FROM pg_catalog.pg_database d WHERE d.datname = pg_catalog.current_database()) LOOP \
             EXECUTE pg_catalog.format('ALTER SUBSCRIPTION %I DISABLE', r.subname); \
             EXECUTE pg_catalog.format('ALTER SUBSCRIPTION %I SET (slot_name = NONE)', r.subname); \
             EXECUTE pg_catalog.format('DROP SUBSCRIPTION %I', r.subname); \
           END LOOP; END $pgvigil$",
    )
    .persistent(false)
    .execute(&mut conn)
    .await
    .map_err(|e| classify(&there, &e));
    super::close(conn).await;
    done.map(|_| ())
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
            ("pgvigil_building_0a1b2c3d", true),
            ("pgvigil_buildin", false),
        ];
        for (name, want) in cases {
            assert_eq!(is_scratch_name(name), want, "{name}");
        }
    }
}
