//! Connections: the libpq environment for child processes (password in `PGPASSWORD`, never in
//! argv), short SQL sessions through sqlx, and their errors classified in plain words.

use super::errors::{PgError, SqlState};
use super::tools::PgVersion;
use crate::infra::secret::{decode, scrub, DbUrl};
use sqlx::postgres::{PgConnectOptions, PgConnection};
use sqlx::{ConnectOptions, Connection};
use std::str::FromStr;
use std::time::Duration;
use url::Url;

/// Query parameters of a URL that map onto libpq environment variables for child processes.
const PARAM_ENV: &[(&str, &str)] = &[
    ("sslmode", "PGSSLMODE"),
    ("sslrootcert", "PGSSLROOTCERT"),
    ("sslcert", "PGSSLCERT"),
    ("sslkey", "PGSSLKEY"),
    ("sslcrl", "PGSSLCRL"),
    ("connect_timeout", "PGCONNECT_TIMEOUT"),
    ("application_name", "PGAPPNAME"),
    ("options", "PGOPTIONS"),
    ("target_session_attrs", "PGTARGETSESSIONATTRS"),
    ("host", "PGHOST"),
    ("port", "PGPORT"),
    ("user", "PGUSER"),
    ("password", "PGPASSWORD"),
    ("dbname", "PGDATABASE"),
];

/// The libpq environment for a child process connecting to `url`: host, port, user, database,
/// TLS settings and the password in `PGPASSWORD`, so nothing secret reaches argv.
pub fn child_env(url: &DbUrl) -> Vec<(String, String)> {
    let u = Url::parse(url.expose()).expect("validated DbUrl");
    // libpq's environment first; what the URL says replaces it below.
    let mut env: Vec<(String, String)> = url.environment().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    let set = |env: &mut Vec<(String, String)>, k: &str, v: String| {
        env.retain(|(name, _)| name != k);
        env.push((k.to_string(), v));
    };
    if let Some(h) = u.host_str().filter(|h| !h.is_empty()) {
        set(&mut env, "PGHOST", h.trim_start_matches('[').trim_end_matches(']').to_string());
    }
    if let Some(p) = u.port() {
        set(&mut env, "PGPORT", p.to_string());
    }
    if !u.username().is_empty() {
        set(&mut env, "PGUSER", decode(u.username()));
    }
    if let Some(pw) = u.password() {
        set(&mut env, "PGPASSWORD", decode(pw));
    }
    set(&mut env, "PGDATABASE", url.database());
    for (k, v) in u.query_pairs() {
        if let Some((_, var)) = PARAM_ENV.iter().find(|(p, _)| *p == k) {
            set(&mut env, var, v.into_owned());
        }
    }
    env
}

/// The secrets contained in a URL, for scrubbing messages.
pub fn secrets_of(url: &DbUrl) -> Vec<String> {
    let mut secrets: Vec<String> = child_env(url)
        .into_iter()
        .filter(|(k, _)| k == "PGPASSWORD")
        .map(|(_, v)| v)
        .collect();
    if let Ok(u) = Url::parse(url.expose()) {
        secrets.extend(u.query_pairs().filter(|(k, _)| k == "sslpassword").map(|(_, v)| v.into_owned()));
    }
    secrets
}

/// Opens one connection, classifying failures in plain words.
///
/// # Errors
/// [`PgError::Unavailable`] for network problems, [`PgError::Rejected`] for authentication and
/// missing databases.
pub async fn connect(url: &DbUrl) -> Result<PgConnection, PgError> {
    let opts = PgConnectOptions::from_str(&for_sqlx(url))
        .map_err(|e| {
            PgError::Rejected(format!(
                "cannot use the database URL {url}: {}",
                scrub(&e.to_string(), &[url.expose()])
            ))
        })?
        .log_statements(tracing::log::LevelFilter::Debug);
    let opts = with_environment(opts, url);
    match tokio::time::timeout(Duration::from_secs(20), opts.connect()).await {
        Err(_) => Err(PgError::Unavailable(format!("timed out connecting to {}", url.redacted()))),
        Ok(Ok(c)) => Ok(c),
        Ok(Err(e)) => Err(classify(url, &e)),
    }
}

/// What the URL leaves open, from libpq's environment as the program found it (sqlx reads the
/// process's own environment too; this also covers `PGPASSWORD_FILE` and settings given to
/// [`crate::infra::config::Settings::from_vars`]).
fn with_environment(mut opts: PgConnectOptions, url: &DbUrl) -> PgConnectOptions {
    let Ok(u) = Url::parse(url.expose()) else { return opts };
    let in_url = |k: &str| u.query_pairs().any(|(p, _)| p == k);
    for (k, v) in url.environment() {
        opts = match k {
            "PGPASSWORD" if u.password().is_none() && !in_url("password") => opts.password(v),
            "PGSSLMODE" if !in_url("sslmode") => match v.parse() {
                Ok(mode) => opts.ssl_mode(mode),
                Err(_) => opts,
            },
            "PGSSLROOTCERT" if !in_url("sslrootcert") => opts.ssl_root_cert(v),
            "PGSSLCERT" if !in_url("sslcert") => opts.ssl_client_cert(v),
            "PGSSLKEY" if !in_url("sslkey") => opts.ssl_client_key(v),
            "PGAPPNAME" if !in_url("application_name") => opts.application_name(v),
            _ => opts,
        };
    }
    opts
}

/// Query parameters sqlx understands; it logs any other one, value included, so the rest (libpq
/// settings such as `connect_timeout`) are honoured by the client tools only.
const SQLX_PARAMS: &[&str] = &[
    "sslmode",
    "sslrootcert",
    "sslcert",
    "sslkey",
    "host",
    "hostaddr",
    "port",
    "user",
    "password",
    "application_name",
    "options",
];

/// The URL with only the parameters sqlx understands.
fn for_sqlx(url: &DbUrl) -> String {
    let Ok(mut u) = Url::parse(url.expose()) else {
        return url.expose().to_string();
    };
    let kept: Vec<(String, String)> = u
        .query_pairs()
        .filter(|(k, _)| SQLX_PARAMS.contains(&k.as_ref()))
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    if kept.is_empty() {
        u.set_query(None);
    } else {
        u.query_pairs_mut().clear().extend_pairs(kept);
    }
    u.to_string()
}

/// Turns a sqlx error into a plain sentence naming the (redacted) server.
pub fn classify(url: &DbUrl, e: &sqlx::Error) -> PgError {
    let secrets = secrets_of(url);
    let refs: Vec<&str> = secrets.iter().map(String::as_str).collect();
    let target = url.redacted();
    match e {
        sqlx::Error::Database(db) => {
            let code = db.code().map(|c| c.to_string()).unwrap_or_default();
            let msg = scrub(db.message(), &refs);
            match code.as_str() {
                "28P01" | "28000" => PgError::Rejected(format!("authentication failed for {target}: {msg} (check the user and password)")),
                SqlState::INVALID_CATALOG_NAME => PgError::Rejected(format!("{msg} on {target} (check the database name in the URL)")),
                SqlState::INSUFFICIENT_PRIVILEGE => PgError::Rejected(format!("permission denied on {target}: {msg}")),
                "57P03" | "53300" | "57P01" => PgError::Unavailable(format!("{target} is not accepting connections: {msg}")),
                _ => PgError::Sql {
                    state: SqlState(code),
                    message: format!("{target}: {msg}"),
                },
            }
        }
        sqlx::Error::Io(io) => PgError::Unavailable(format!("cannot reach {target}: {io}")),
        sqlx::Error::Tls(t) => PgError::Rejected(format!("TLS negotiation with {target} failed: {}", scrub(&t.to_string(), &refs))),
        sqlx::Error::PoolTimedOut => PgError::Unavailable(format!("timed out connecting to {target}")),
        other => PgError::Unavailable(format!("{target}: {}", scrub(&other.to_string(), &refs))),
    }
}

/// The server's version: (`server_version_num`, human `server_version`).
///
/// # Errors
/// Connection or query failures.
pub async fn server_version(conn: &mut PgConnection, url: &DbUrl) -> Result<PgVersion, PgError> {
    let num: String = sqlx::query_scalar("SHOW server_version_num")
        .fetch_one(&mut *conn)
        .await
        .map_err(|e| classify(url, &e))?;
    let n: u32 = num
        .trim()
        .parse()
        .map_err(|_| PgError::Unavailable(format!("{} reported an unexpected server_version_num {num:?}", url.redacted())))?;
    Ok(PgVersion {
        major: n / 10_000,
        minor: n % 10_000,
    })
}

/// Closes a connection politely, ignoring errors.
pub async fn close(conn: PgConnection) {
    let _ = conn.close().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlx_gets_only_the_parameters_it_understands() {
        let u = DbUrl::parse("postgresql://u:p@h/db?sslmode=require&connect_timeout=5&target_session_attrs=read-write").unwrap();
        let s = for_sqlx(&u);
        assert!(s.contains("sslmode=require"), "{s}");
        assert!(!s.contains("connect_timeout"), "{s}");
        let env = child_env(&u);
        assert!(
            env.contains(&("PGCONNECT_TIMEOUT".to_string(), "5".to_string())),
            "the tools still get it: {env:?}"
        );
    }
}
