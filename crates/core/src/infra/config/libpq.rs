//! A restore target described by libpq's own variables, for `pgvigil restore` run from a shell
//! that is set up for `psql`.

use super::raw::RawEnv;
use super::validate::{nonempty, Validator};

/// A libpq variable, its value, the test it must pass, and what it expects.
type Check<'a> = (&'static str, &'a Option<String>, fn(&str) -> bool, &'static str);

impl Validator {
    /// libpq's environment as this program found it, passed on to its connections and its tools
    /// (`pg_dump`, `pg_dumpall`, `psql`) for whatever a URL does not say; `PGPASSWORD_FILE` is
    /// read like the other secrets.
    pub(super) fn libpq_env(&mut self, raw: &RawEnv) -> Vec<(String, String)> {
        let password = self.secret("PGPASSWORD", "PGPASSWORD_FILE", raw.pgpassword.clone(), raw.pgpassword_file.clone());
        let vars = [
            ("PGHOST", &raw.pghost),
            ("PGPORT", &raw.pgport),
            ("PGUSER", &raw.pguser),
            ("PGDATABASE", &raw.pgdatabase),
            ("PGPASSFILE", &raw.pgpassfile),
            ("PGSSLMODE", &raw.pgsslmode),
            ("PGSSLROOTCERT", &raw.pgsslrootcert),
            ("PGSSLCERT", &raw.pgsslcert),
            ("PGSSLKEY", &raw.pgsslkey),
            ("PGSSLCRL", &raw.pgsslcrl),
            ("PGOPTIONS", &raw.pgoptions),
            ("PGAPPNAME", &raw.pgappname),
            ("PGCONNECT_TIMEOUT", &raw.pgconnect_timeout),
            ("PGTARGETSESSIONATTRS", &raw.pgtargetsessionattrs),
        ];
        // libpq refuses a bad value where sqlx would quietly fall back to its default (an
        // unchecked certificate, another port): say so at start instead.
        let checks: [Check; 4] = [
            (
                "PGSSLMODE",
                &raw.pgsslmode,
                |v| ["disable", "allow", "prefer", "require", "verify-ca", "verify-full"].contains(&v),
                "one of disable, allow, prefer, require, verify-ca, verify-full",
            ),
            (
                "PGPORT",
                &raw.pgport,
                |v| v.parse::<u16>().is_ok_and(|p| p > 0),
                "a TCP port from 1 to 65535",
            ),
            (
                "PGCONNECT_TIMEOUT",
                &raw.pgconnect_timeout,
                |v| v.parse::<u32>().is_ok(),
                "whole seconds (0 waits forever)",
            ),
            (
                "PGTARGETSESSIONATTRS",
                &raw.pgtargetsessionattrs,
                |v| ["any", "read-write", "read-only", "primary", "standby", "prefer-standby"].contains(&v),
                "one of any, read-write, read-only, primary, standby, prefer-standby",
            ),
        ];
        for (name, value, ok, expected) in checks {
            if let Some(v) = nonempty(value.clone()) {
                if !ok(v.trim()) {
                    self.bad(name, format!("expected {expected}, got {v:?}"));
                }
            }
        }
        let mut env: Vec<(String, String)> = vars
            .into_iter()
            .filter_map(|(k, v)| nonempty(v.clone()).map(|v| (k.to_string(), v)))
            .collect();
        env.extend(password.map(|p| ("PGPASSWORD".to_string(), p)));
        env
    }
}

/// libpq's own connection variables.
pub(super) struct Libpq {
    pub(super) host: Option<String>,
    pub(super) port: Option<String>,
    pub(super) user: Option<String>,
    pub(super) password: Option<String>,
    pub(super) database: Option<String>,
    pub(super) sslmode: Option<String>,
}

/// A URL from libpq's own variables (`PGHOST`, `PGPORT`, `PGUSER`, `PGPASSWORD`, `PGDATABASE`,
/// `PGSSLMODE`), for `pgvigil restore` when no `RESTORE_DATABASE_URL` is set; `None` when neither
/// a host nor a database is given.
pub(super) fn libpq_url(raw: Libpq) -> Option<String> {
    use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};
    let enc = |s: &str| utf8_percent_encode(s, NON_ALPHANUMERIC).to_string();
    let host = nonempty(raw.host);
    let database = nonempty(raw.database);
    if host.is_none() && database.is_none() {
        return None;
    }
    let user_name = nonempty(raw.user);
    let password = nonempty(raw.password);
    let port = nonempty(raw.port).map(|p| p.trim().to_string());
    let db = enc(&database.or(user_name.clone()).unwrap_or_else(|| "postgres".into()));
    let mut query: Vec<String> = Vec::new();
    if let Some(mode) = nonempty(raw.sslmode) {
        query.push(format!("sslmode={}", enc(&mode)));
    }
    let url = match host.as_deref() {
        // A socket directory cannot be a URL's host: everything goes in parameters.
        Some(dir) if dir.starts_with('/') => {
            query.insert(0, format!("host={}", enc(dir)));
            query.extend(port.map(|p| format!("port={}", enc(&p))));
            query.extend(user_name.map(|u| format!("user={}", enc(&u))));
            query.extend(password.map(|p| format!("password={}", enc(&p))));
            format!("postgresql:///{db}?{}", query.join("&"))
        }
        _ => {
            let user = user_name.as_deref().map(enc).unwrap_or_else(|| "postgres".into());
            let password = password.map(|p| format!(":{}", enc(&p))).unwrap_or_default();
            let host = host.unwrap_or_else(|| "localhost".into());
            let port = port.map(|p| format!(":{p}")).unwrap_or_default();
            let query = if query.is_empty() {
                String::new()
            } else {
                format!("?{}", query.join("&"))
            };
            format!("postgresql://{user}{password}@{host}{port}/{db}{query}")
        }
    };
    Some(url)
}
