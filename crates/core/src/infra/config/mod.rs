//! The environment contract of spec.md, loaded once into typed, validated structs.
//!
//! [`raw`] reads every variable as a string (`envy` + `serde`); [`validate`] turns them into the
//! typed [`settings`], reporting *all* problems together, each naming the variable and what it
//! expects. Secret values are never echoed back in those messages.

mod authenticity;
mod choices;
mod http;
mod libpq;
mod raw;
mod sections;
mod settings;
mod storage;
mod validate;

pub use http::HealthAccess;
pub use raw::{RawEnv, VARIABLES};
pub use settings::{
    Amcheck, Backend, BackupConfig, Databases, Identities, LogFormat, NotifyConfig, ObjectLock, S3Config, Settings, Sse, StorageConfig,
    ToolsConfig, VerifyConfig,
};

use std::fmt;

/// Which program is loading the configuration; decides which variables are required.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// `pgvigil-backup`: needs `DATABASE_URL`.
    Backup,
    /// `pgvigil-verify`: needs `VERIFY_DATABASE_URL`.
    Verify,
    /// `pgvigil`: needs only storage; database settings are checked if present.
    Cli,
}

impl Role {
    /// The service's name in labels, notifications and the health endpoint: `backup`, `verify`
    /// (`cli` for the operator CLI).
    pub fn name(self) -> &'static str {
        match self {
            Role::Backup => "backup",
            Role::Verify => "verify",
            Role::Cli => "cli",
        }
    }
}

/// One invalid or missing variable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The variable's name, e.g. `BACKUP_INTERVAL`.
    pub var: &'static str,
    /// What it expects and, for non-secret values, what it got.
    pub message: String,
}

/// All configuration problems found at start-up, reported together.
#[derive(Debug, thiserror::Error)]
pub struct ConfigError {
    /// Every problem, in the order the variables are documented.
    pub problems: Vec<Problem>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid configuration ({} problem{}):",
            self.problems.len(),
            if self.problems.len() == 1 { "" } else { "s" }
        )?;
        for p in &self.problems {
            write!(f, "\n  {}: {}", p.var, p.message)?;
        }
        write!(f, "\nSee docs/configuration.md for every variable.")
    }
}

impl Settings {
    /// Loads the configuration from the process environment.
    ///
    /// # Errors
    /// [`ConfigError`] listing every missing or malformed variable.
    pub fn from_env(role: Role) -> Result<Self, ConfigError> {
        Self::from_vars(std::env::vars(), role)
    }

    /// Loads the configuration from the given variables (used by tests).
    ///
    /// # Errors
    /// [`ConfigError`] listing every missing or malformed variable.
    pub fn from_vars<I: IntoIterator<Item = (String, String)>>(vars: I, role: Role) -> Result<Self, ConfigError> {
        let vars = vars.into_iter().filter(|(k, _)| VARIABLES.contains(&k.as_str()) && k != "RUST_LOG");
        let raw: RawEnv = envy::from_iter(vars).map_err(|e| ConfigError {
            problems: vec![Problem {
                var: "environment",
                message: e.to_string(),
            }],
        })?;
        let mut v = validate::Validator::default();
        let settings = v.settings(raw, role);
        match settings {
            Some(s) if v.problems.is_empty() => Ok(s),
            _ => Err(ConfigError { problems: v.problems }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn load(vars: &[(&str, &str)], role: Role) -> Result<Settings, ConfigError> {
        Settings::from_vars(vars.iter().map(|(k, v)| (k.to_string(), v.to_string())), role)
    }

    #[test]
    fn minimal_local_backup_config_uses_defaults() {
        let s = load(
            &[("DATABASE_URL", "postgresql://u:pw@h/db"), ("BACKUP_DIR", "/tmp/b")],
            Role::Backup,
        )
        .unwrap();
        let b = s.backup;
        assert!(s.database_url.is_some());
        assert_eq!(b.compression_level, 6);
        assert_eq!(b.retention.retention_days, 7);
        assert_eq!(b.interval, Duration::from_secs(86_400));
        assert_eq!(s.storage.prefix, "backups");
        assert!(matches!(s.storage.backend, Backend::Local { .. }));
        assert_eq!(s.retry_backoff, Duration::from_secs(30));
    }

    #[test]
    fn every_bad_variable_is_reported_at_once() {
        let cases: &[(&str, &str, &str)] = &[
            (
                "BACKUP_INTERVAL",
                "6h",
                "BACKUP_INTERVAL: expected whole seconds > 0 (e.g. 3600 for hourly), got \"6h\"",
            ),
            (
                "COMPRESSION_LEVEL",
                "13",
                "COMPRESSION_LEVEL: expected a gzip level from 1 to 12, got \"13\"",
            ),
            (
                "BACKUP_RETENTION_DAYS",
                "-1",
                "BACKUP_RETENTION_DAYS: expected whole days >= 1, got \"-1\"",
            ),
            (
                "S3_FORCE_PATH_STYLE",
                "maybe",
                "S3_FORCE_PATH_STYLE: expected true or false, got \"maybe\"",
            ),
            ("S3_ENDPOINT", "localhost:9000", "S3_ENDPOINT: expected an http:// or https:// URL"),
            ("S3_SSE", "rot13", "S3_SSE: expected AES256 or aws:kms"),
            ("PORT", "http", "PORT: expected a TCP port number"),
            ("LOG_FORMAT", "xml", "LOG_FORMAT: expected text or json"),
            ("PGSSLMODE", "verify_full", "PGSSLMODE: expected one of disable, allow, prefer"),
            ("PGPORT", "54321x", "PGPORT: expected a TCP port from 1 to 65535"),
            ("PGCONNECT_TIMEOUT", "10s", "PGCONNECT_TIMEOUT: expected whole seconds"),
            (
                "PGTARGETSESSIONATTRS",
                "rw",
                "PGTARGETSESSIONATTRS: expected one of any, read-write",
            ),
            (
                "VERIFY_QUERIES",
                "SELECT 1",
                "VERIFY_QUERIES: set either VERIFY_QUERIES or VERIFY_QUERIES_FILE, not both",
            ),
            ("VERIFY_RANDOM_RATE", "2", "VERIFY_RANDOM_RATE: expected a fraction from 0 to 1"),
            ("VERIFY_JOBS", "0", "VERIFY_JOBS: expected a whole number of verifications at once"),
            (
                "BACKUP_KEEP_DAILY",
                "-7",
                "BACKUP_KEEP_DAILY: expected a whole number of days to keep, 0 to 36500",
            ),
            (
                "BACKUP_KEEP_MONTHLY",
                "36501",
                "BACKUP_KEEP_MONTHLY: expected a whole number of months to keep",
            ),
            (
                "BACKUP_TIMEZONE",
                "CET+1",
                "BACKUP_TIMEZONE: \"CET+1\" is not a time zone name from the IANA database",
            ),
            (
                "PG_DUMP_OPTIONS",
                "--format=custom",
                "PG_DUMP_OPTIONS: --format is not allowed: pgvigil writes plain SQL",
            ),
            ("BACKUP_PREFIX", "a/../b", "BACKUP_PREFIX:"),
            (
                "RETRY_BACKOFF_SECS",
                "0",
                "RETRY_BACKOFF_SECS: expected whole seconds from 1 to 3600, got \"0\"",
            ),
            (
                "BACKUP_DATABASES",
                "a,,b",
                "BACKUP_DATABASES: expected database names separated by commas",
            ),
            ("BACKUP_PRIVILEGES", "maybe", "BACKUP_PRIVILEGES: expected keep or omit"),
        ];
        let mut vars = vec![
            ("DATABASE_URL", "postgresql://u:pw@h/db"),
            ("S3_BUCKET", "bucket"),
            ("VERIFY_QUERIES_FILE", "/etc/checks.sql"),
        ];
        vars.extend(cases.iter().map(|(k, v, _)| (*k, *v)));
        let err = load(&vars, Role::Backup).unwrap_err().to_string();
        for (_, _, expected) in cases {
            assert!(err.contains(expected), "missing {expected:?} in:\n{err}");
        }
        assert_eq!(err.matches("\n  ").count(), cases.len(), "{err}");
    }

    #[test]
    fn missing_required_variables_are_named() {
        let err = load(&[], Role::Backup).unwrap_err().to_string();
        assert!(err.contains("DATABASE_URL: required"), "{err}");
        assert!(err.contains("S3_BUCKET: required"), "{err}");
        let err = load(&[("BACKUP_DIR", "/x")], Role::Verify).unwrap_err().to_string();
        assert!(err.contains("VERIFY_DATABASE_URL: required"), "{err}");
        assert!(load(&[("BACKUP_DIR", "/x")], Role::Cli).is_ok());
        // Without storage, every other bad variable is still named.
        let err = load(
            &[
                ("PORT", "http"),
                ("RETRY_BACKOFF_SECS", "0"),
                ("LOG_FORMAT", "xml"),
                ("STORAGE_PRICE_PER_GB_MONTH", "free"),
                ("BACKUP_DATABASES", ","),
                ("HEALTH_TOKEN", "short"),
            ],
            Role::Cli,
        )
        .unwrap_err()
        .to_string();
        for var in [
            "S3_BUCKET",
            "PORT",
            "RETRY_BACKOFF_SECS",
            "LOG_FORMAT",
            "STORAGE_PRICE_PER_GB_MONTH",
            "BACKUP_DATABASES",
            "HEALTH_TOKEN",
        ] {
            assert!(err.contains(&format!("{var}:")), "{var} not named in:\n{err}");
        }
    }

    #[test]
    fn secrets_are_never_echoed() {
        let vars = [
            ("DATABASE_URL", "mysql://root:hunter2@h/db"),
            ("S3_BUCKET", "bucket"),
            ("S3_ACCESS_KEY_ID", "AKIAEXAMPLE"),
            ("S3_SECRET_ACCESS_KEY", "wJalrXUtnFEMI"),
        ];
        let err = load(&vars, Role::Backup).unwrap_err().to_string();
        assert!(!err.contains("hunter2"), "{err}");
        for endpoint in ["http://minio:s3cretpw@host:9000", "minio:s3cretpw@host"] {
            let err = load(
                &[("DATABASE_URL", "postgresql://h/db"), ("S3_BUCKET", "b"), ("S3_ENDPOINT", endpoint)],
                Role::Backup,
            )
            .unwrap_err()
            .to_string();
            assert!(err.contains("S3_ENDPOINT") && !err.contains("s3cretpw"), "{err}");
        }
        let ok = load(
            &[
                ("DATABASE_URL", "postgresql://root:hunter2@h/db"),
                ("S3_BUCKET", "bucket"),
                ("S3_ACCESS_KEY_ID", "AKIAEXAMPLE"),
                ("S3_SECRET_ACCESS_KEY", "wJalrXUtnFEMI"),
            ],
            Role::Backup,
        )
        .unwrap();
        let debug = format!("{ok:?}");
        assert!(!debug.contains("hunter2") && !debug.contains("wJalrXUtnFEMI"), "{debug}");
    }

    #[test]
    fn secrets_can_come_from_files() {
        let dir = std::env::temp_dir().join(format!("pgvigil-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("secret");
        std::fs::write(&f, "topsecret\n").unwrap();
        let s = load(
            &[
                ("S3_BUCKET", "bkt"),
                ("S3_ACCESS_KEY_ID", "id"),
                ("S3_SECRET_ACCESS_KEY_FILE", f.to_str().unwrap()),
            ],
            Role::Cli,
        )
        .unwrap();
        let Backend::S3(s3) = s.storage.backend else {
            panic!("expected S3")
        };
        use secrecy::ExposeSecret;
        assert_eq!(s3.credentials.unwrap().1.expose_secret(), "topsecret");
        assert!(!s3.force_path_style);
        let both = load(&[("S3_BUCKET", "bkt"), ("BACKUP_DIR", "/x")], Role::Cli)
            .unwrap_err()
            .to_string();
        assert!(both.contains("BACKUP_DIR") && both.contains("not both"), "{both}");
        let err = load(&[("S3_BUCKET", "bkt"), ("DATABASE_URL_FILE", "/nonexistent/x")], Role::Backup)
            .unwrap_err()
            .to_string();
        assert!(err.contains("DATABASE_URL_FILE: cannot read file"), "{err}");
    }

    #[test]
    fn restore_target_from_libpq_variables() {
        type Case<'a> = (&'a [(&'a str, &'a str)], Option<&'a str>);
        let cases: &[Case] = &[
            (&[], None),
            (
                &[
                    ("PGHOST", "db.internal"),
                    ("PGPORT", "6432"),
                    ("PGUSER", "app"),
                    ("PGPASSWORD", "p@ss"),
                    ("PGDATABASE", "shop"),
                ],
                Some("postgresql://app:***@db.internal:6432/shop"),
            ),
            (&[("PGDATABASE", "shop")], Some("postgresql://postgres@localhost/shop")),
            (
                &[("PGHOST", "/var/run/postgresql"), ("PGDATABASE", "shop"), ("PGSSLMODE", "disable")],
                Some("postgresql:///shop?host=%2Fvar%2Frun%2Fpostgresql&sslmode=disable"),
            ),
            (
                &[("RESTORE_DATABASE_URL", "postgresql://x@h/first"), ("PGDATABASE", "shop")],
                Some("postgresql://x@h/first"),
            ),
        ];
        for (vars, want) in cases {
            let mut all = vec![("BACKUP_DIR", "/x")];
            all.extend_from_slice(vars);
            let s = load(&all, Role::Cli).unwrap();
            let got = s.restore_database_url.as_ref().map(ToString::to_string);
            match want {
                None => assert_eq!(got, None),
                Some(w) => assert!(got.as_deref().is_some_and(|g| g.starts_with(w)), "{vars:?}: {got:?}"),
            }
        }
        let s = load(
            &[("BACKUP_DIR", "/x"), ("PGHOST", "h"), ("PGPASSWORD", "p@ss"), ("PGDATABASE", "d")],
            Role::Cli,
        )
        .unwrap();
        let env = crate::infra::pg::child_env(s.restore_database_url.as_ref().unwrap());
        assert!(env.contains(&("PGPASSWORD".to_string(), "p@ss".to_string())), "{env:?}");
    }

    #[test]
    fn endpoint_turns_on_path_style_by_default() {
        let s = load(&[("S3_BUCKET", "bkt"), ("S3_ENDPOINT", "http://127.0.0.1:9000/")], Role::Cli).unwrap();
        let Backend::S3(s3) = s.storage.backend else {
            panic!("expected S3")
        };
        assert!(s3.force_path_style);
        assert_eq!(s3.endpoint.as_deref(), Some("http://127.0.0.1:9000"));
    }
}
