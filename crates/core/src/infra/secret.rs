//! Secret handling: database URLs that may carry passwords, shown only in redacted form.

use secrecy::{ExposeSecret, SecretString};
use std::fmt;
use url::Url;

/// Whether a query parameter may carry a secret (`password`, and anything named like one, in any
/// case): its value is never shown.
fn is_secret_param(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    ["pass", "secret", "token"].iter().any(|s| k.contains(s))
}

/// A PostgreSQL connection URL. The password inside never appears in `Debug`/`Display` output.
#[derive(Clone)]
pub struct DbUrl {
    /// The full URL including the password; exposed only to build a connection or a child env.
    secret: SecretString,
    /// The same URL with the password replaced by `***`, safe to log.
    redacted: String,
    /// libpq's environment (`PGPASSWORD`, `PGSSLMODE`, …) as the program found it: what the URL
    /// does not say comes from there, for pgvigil's own connections and its tools alike.
    environment: LibpqEnv,
}

/// libpq's environment variables (`PGPASSWORD`, `PGSSLMODE`, …) as the program found them.
/// `Debug` shows the names only: values may be secret.
#[derive(Clone, Default)]
pub struct LibpqEnv(std::sync::Arc<Vec<(String, SecretString)>>);

impl LibpqEnv {
    /// From name/value pairs.
    pub fn new(vars: Vec<(String, String)>) -> Self {
        Self(std::sync::Arc::new(
            vars.into_iter().map(|(k, v)| (k, SecretString::from(v))).collect(),
        ))
    }
}

impl std::fmt::Debug for LibpqEnv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.0.iter().map(|(k, _)| k)).finish()
    }
}

impl DbUrl {
    /// Parses and validates a `postgres://` or `postgresql://` URL.
    ///
    /// # Errors
    /// A plain sentence (without the password) when the URL is malformed.
    pub fn parse(raw: &str) -> Result<Self, String> {
        let url = Url::parse(raw.trim()).map_err(|e| format!("expected a postgresql:// URL ({e})"))?;
        if url.scheme() != "postgres" && url.scheme() != "postgresql" {
            return Err(format!("expected a postgresql:// URL, got scheme \"{}\"", url.scheme()));
        }
        if url.path().trim_start_matches('/').is_empty() {
            return Err("expected a database name in the URL path (postgresql://user@host/DBNAME)".into());
        }
        if url.query_pairs().any(|(k, _)| k == "sslpassword") {
            // libpq has no environment variable for it, so pg_dump and psql could only get it on
            // their command line, where every user of the machine can read it.
            return Err("?sslpassword= is not supported (it would have to be shown on pg_dump's command line); use a client key without a passphrase, readable only by pgvigil's user".into());
        }
        if url.query_pairs().any(|(k, _)| k == "dbname") {
            // It would override the path for libpq and sqlx alike, and with it the database that
            // pgvigil means (a verify scratch database, a restore target).
            return Err("the database name belongs in the URL's path (postgresql://user@host/DBNAME), not in ?dbname=".into());
        }
        let mut shown = url.clone();
        if url.password().is_some() {
            // set_password only fails for URLs that cannot have a password, which we rejected above.
            let _ = shown.set_password(Some("***"));
        }
        if url.query_pairs().any(|(k, _)| is_secret_param(&k)) {
            let pairs: Vec<(String, String)> = url
                .query_pairs()
                .map(|(k, v)| {
                    let v = if is_secret_param(&k) { "***".to_string() } else { v.into_owned() };
                    (k.into_owned(), v)
                })
                .collect();
            shown.query_pairs_mut().clear().extend_pairs(pairs);
        }
        Ok(Self {
            secret: SecretString::from(raw.trim().to_string()),
            redacted: shown.to_string(),
            environment: LibpqEnv::default(),
        })
    }

    /// This URL with libpq's environment behind it (`PGPASSWORD`, `PGPASSFILE`, `PGSSLMODE`, …):
    /// what the URL itself says wins.
    #[must_use]
    pub fn with_environment(mut self, environment: &LibpqEnv) -> Self {
        self.environment = environment.clone();
        self
    }

    /// libpq's environment behind this URL (values may be secret: never log them).
    pub fn environment(&self) -> impl Iterator<Item = (&str, &str)> {
        self.environment.0.iter().map(|(k, v)| (k.as_str(), v.expose_secret()))
    }

    /// The URL with its password, for building connections. Never log the result.
    pub fn expose(&self) -> &str {
        self.secret.expose_secret()
    }

    /// Whether the URL carries a password.
    pub fn has_password(&self) -> bool {
        Url::parse(self.expose()).is_ok_and(|u| u.password().is_some() || u.query_pairs().any(|(k, _)| is_secret_param(&k)))
    }

    /// The URL with the password replaced by `***`.
    pub fn redacted(&self) -> &str {
        &self.redacted
    }

    /// A copy of this URL pointing at another database on the same server. The name is
    /// percent-encoded whole, so `%` or `/` in it cannot point anywhere else.
    ///
    /// # Errors
    /// For names a URL path cannot carry (`.` and `..` are path steps to every URL parser).
    pub fn with_database(&self, db: &str) -> Result<Self, String> {
        if db.is_empty() || db == "." || db == ".." {
            return Err(format!("a database named {db:?} cannot be addressed by URL"));
        }
        let mut url = Url::parse(self.expose()).expect("validated at parse");
        let encoded = percent_encoding::utf8_percent_encode(db, percent_encoding::NON_ALPHANUMERIC).to_string();
        url.set_path(&format!("/{encoded}"));
        let mut other = Self::parse(url.as_str())?;
        other.environment = self.environment.clone();
        if other.database() != db {
            return Err(format!("a database named {db:?} cannot be addressed by URL"));
        }
        Ok(other)
    }

    /// Database name from the path, percent-decoded.
    pub fn database(&self) -> String {
        let url = Url::parse(self.expose()).expect("validated at parse");
        decode(url.path().trim_start_matches('/'))
    }
}

/// Percent-decodes a URL component.
pub(crate) fn decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s).decode_utf8_lossy().into_owned()
}

impl fmt::Debug for DbUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted)
    }
}

impl fmt::Display for DbUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted)
    }
}

/// Replaces every occurrence of a secret inside an arbitrary message (child stderr, SDK errors).
pub fn scrub(message: &str, secrets: &[&str]) -> String {
    let mut out = message.to_string();
    for s in secrets.iter().filter(|s| s.len() >= 3) {
        out = out.replace(*s, "***");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_display_hide_the_password() {
        let u = DbUrl::parse("postgresql://bob:s3cr%40t@db.example:5432/app?sslmode=require").unwrap();
        for shown in [format!("{u:?}"), format!("{u}"), u.redacted().to_string()] {
            assert!(!shown.contains("s3cr"), "{shown}");
            assert!(shown.contains("bob:***@db.example"), "{shown}");
        }
        assert_eq!(u.database(), "app");
    }

    #[test]
    fn passwords_in_query_parameters_are_hidden_too() {
        let u = DbUrl::parse("postgresql://bob@db/app?password=hunter2&sslmode=require&PassWord=keypass&api_token=tok3n").unwrap();
        for shown in [format!("{u:?}"), format!("{u}")] {
            assert!(
                !shown.contains("hunter2") && !shown.contains("keypass") && !shown.contains("tok3n"),
                "{shown}"
            );
            assert!(shown.contains("sslmode=require"), "{shown}");
        }
        let e = DbUrl::parse("postgresql://bob@db/app?sslpassword=keypass").unwrap_err();
        assert!(e.contains("not supported") && !e.contains("keypass"), "{e}");
        assert!(u.has_password());
        assert!(!DbUrl::parse("postgresql://bob@db/app").unwrap().has_password());
    }

    #[test]
    fn rejects_bad_urls() {
        for bad in [
            "mysql://x/y",
            "postgresql://host",
            "not a url",
            "postgresql://h/postgres?dbname=app",
        ] {
            assert!(DbUrl::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn another_database_is_exactly_the_one_named() {
        let u = DbUrl::parse("postgresql://bob:pw@db/app?sslmode=require").unwrap();
        for name in ["billing", "a%41", "x/../b", "My DB", "café", "a.b"] {
            let other = u.with_database(name).unwrap();
            assert_eq!(other.database(), name);
            assert!(other.to_string().contains("sslmode=require"));
        }
        for name in ["", ".", ".."] {
            assert!(u.with_database(name).is_err(), "{name:?}");
        }
    }

    #[test]
    fn scrub_removes_secrets() {
        assert_eq!(scrub("auth failed for hunter2", &["hunter2"]), "auth failed for ***");
    }
}
