//! The environment contract of spec.md, loaded once into typed, validated structs.
//!
//! Every variable is read through [`RawEnv`] (`envy` + `serde`), then validated by hand so that *all*
//! problems are reported together, each naming the variable and what it expects. Secret values are
//! never echoed back in those messages.

use crate::retention::RetentionPolicy;
use crate::secret::DbUrl;
use secrecy::SecretString;
use serde::Deserialize;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

/// Every variable pgvigil reads, as raw strings. Field names are the variable names in lower case.
#[derive(Deserialize, Default)]
pub struct RawEnv {
    database_url: Option<String>,
    database_url_file: Option<String>,
    verify_database_url: Option<String>,
    verify_database_url_file: Option<String>,
    s3_bucket: Option<String>,
    backup_dir: Option<String>,
    backup_prefix: Option<String>,
    s3_endpoint: Option<String>,
    s3_region: Option<String>,
    s3_access_key_id: Option<String>,
    s3_access_key_id_file: Option<String>,
    s3_secret_access_key: Option<String>,
    s3_secret_access_key_file: Option<String>,
    s3_force_path_style: Option<String>,
    s3_sse: Option<String>,
    s3_sse_kms_key_id: Option<String>,
    s3_storage_class: Option<String>,
    s3_part_size_mb: Option<String>,
    backup_interval: Option<String>,
    compression_level: Option<String>,
    backup_retention_days: Option<String>,
    backup_min_keep: Option<String>,
    pg_dump_options: Option<String>,
    pg_dump_path: Option<String>,
    psql_path: Option<String>,
    verify_interval: Option<String>,
    verify_queries_file: Option<String>,
    verify_random_rate: Option<String>,
    port: Option<String>,
    log_format: Option<String>,
    storage_price_per_gb_month: Option<String>,
}

/// Every environment variable name pgvigil reads (kept in sync with `docs/configuration.md` by a test).
pub const VARIABLES: &[&str] = &[
    "DATABASE_URL",
    "DATABASE_URL_FILE",
    "VERIFY_DATABASE_URL",
    "VERIFY_DATABASE_URL_FILE",
    "S3_BUCKET",
    "BACKUP_DIR",
    "BACKUP_PREFIX",
    "S3_ENDPOINT",
    "S3_REGION",
    "S3_ACCESS_KEY_ID",
    "S3_ACCESS_KEY_ID_FILE",
    "S3_SECRET_ACCESS_KEY",
    "S3_SECRET_ACCESS_KEY_FILE",
    "S3_FORCE_PATH_STYLE",
    "S3_SSE",
    "S3_SSE_KMS_KEY_ID",
    "S3_STORAGE_CLASS",
    "S3_PART_SIZE_MB",
    "BACKUP_INTERVAL",
    "COMPRESSION_LEVEL",
    "BACKUP_RETENTION_DAYS",
    "BACKUP_MIN_KEEP",
    "PG_DUMP_OPTIONS",
    "PG_DUMP_PATH",
    "PSQL_PATH",
    "VERIFY_INTERVAL",
    "VERIFY_QUERIES_FILE",
    "VERIFY_RANDOM_RATE",
    "PORT",
    "LOG_FORMAT",
    "RUST_LOG",
    "STORAGE_PRICE_PER_GB_MONTH",
];

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

/// Where backups live.
#[derive(Debug, Clone)]
pub enum Backend {
    /// An S3 (or S3-compatible) bucket.
    S3(S3Config),
    /// A local directory (development, air-gapped hosts).
    Local {
        /// Root directory; keys become relative paths under it.
        dir: PathBuf,
    },
}

/// Server-side encryption requested for every object pgvigil writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sse {
    /// SSE-S3 (`AES256`).
    Aes256,
    /// SSE-KMS, optionally with a specific key.
    Kms {
        /// `S3_SSE_KMS_KEY_ID`; `None` uses the bucket's default KMS key.
        key_id: Option<String>,
    },
}

/// S3 connection settings.
#[derive(Clone)]
pub struct S3Config {
    /// Bucket name.
    pub bucket: String,
    /// Custom endpoint for S3-compatible stores; `None` for AWS.
    pub endpoint: Option<String>,
    /// Region used for signing.
    pub region: String,
    /// Static credentials; `None` uses the standard AWS credential chain.
    pub credentials: Option<(String, SecretString)>,
    /// Path-style addressing (`endpoint/bucket/key`), needed by most compatible stores.
    pub force_path_style: bool,
    /// Optional server-side encryption.
    pub sse: Option<Sse>,
    /// Optional storage class, e.g. `STANDARD_IA`.
    pub storage_class: Option<String>,
    /// Fixed multipart part size; `None` chooses it from the expected size.
    pub part_size: Option<u64>,
}

impl fmt::Debug for S3Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Config")
            .field("bucket", &self.bucket)
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("access_key_id", &self.credentials.as_ref().map(|(id, _)| id))
            .field("secret_access_key", &self.credentials.as_ref().map(|_| "***"))
            .field("force_path_style", &self.force_path_style)
            .field("sse", &self.sse)
            .field("storage_class", &self.storage_class)
            .field("part_size", &self.part_size)
            .finish()
    }
}

/// Storage backend plus the key prefix that holds the backups.
#[derive(Debug, Clone)]
pub struct StorageConfig {
    /// S3 or local directory.
    pub backend: Backend,
    /// `BACKUP_PREFIX`, without leading or trailing slashes.
    pub prefix: String,
}

/// Where to find `pg_dump` and `psql`.
#[derive(Debug, Clone, Default)]
pub struct ToolsConfig {
    /// `PG_DUMP_PATH`: use exactly this `pg_dump`.
    pub pg_dump: Option<PathBuf>,
    /// `PSQL_PATH`: use exactly this `psql`.
    pub psql: Option<PathBuf>,
}

/// Settings of the backup job.
#[derive(Debug, Clone)]
pub struct BackupConfig {
    /// The database to back up.
    pub database_url: DbUrl,
    /// Time between backups.
    pub interval: Duration,
    /// gzip level 1–9.
    pub compression_level: u32,
    /// What retention may delete.
    pub retention: RetentionPolicy,
    /// Extra `pg_dump` arguments from `PG_DUMP_OPTIONS`.
    pub dump_options: Vec<String>,
}

/// Settings of the verify job.
#[derive(Debug, Clone)]
pub struct VerifyConfig {
    /// Server on which scratch databases are created.
    pub database_url: DbUrl,
    /// Time between verifications.
    pub interval: Duration,
    /// Optional SQL checks run against the restored database.
    pub queries_file: Option<PathBuf>,
    /// Probability (0–1) that a run verifies a random older backup instead of the newest.
    pub random_rate: f64,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// The whole validated configuration.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Where backups are stored.
    pub storage: StorageConfig,
    /// Client tool locations.
    pub tools: ToolsConfig,
    /// Present when `DATABASE_URL` is set (always for the backup service).
    pub backup: Option<BackupConfig>,
    /// Present when `VERIFY_DATABASE_URL` is set (always for the verify service).
    pub verify: Option<VerifyConfig>,
    /// HTTP port for `/healthz` and `/metrics`; `None` disables the endpoint.
    pub port: Option<u16>,
    /// Text or JSON logs.
    pub log_format: LogFormat,
    /// Price per GB-month used by `pgvigil report` for the cost projection.
    pub price_per_gb_month: f64,
    /// Retention policy (also needed by `pgvigil prune` and `report` without `DATABASE_URL`).
    pub retention: RetentionPolicy,
    /// `BACKUP_INTERVAL` (also needed by `pgvigil status` without `DATABASE_URL`).
    pub backup_interval: Duration,
    /// `VERIFY_INTERVAL` (also needed by `pgvigil status`).
    pub verify_interval: Duration,
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
        let mut v = Validator::default();
        let settings = v.settings(raw, role);
        match settings {
            Some(s) if v.problems.is_empty() => Ok(s),
            _ => Err(ConfigError { problems: v.problems }),
        }
    }
}

/// Collects problems while turning raw strings into typed values.
#[derive(Default)]
struct Validator {
    problems: Vec<Problem>,
}

impl Validator {
    fn bad(&mut self, var: &'static str, message: impl Into<String>) {
        self.problems.push(Problem {
            var,
            message: message.into(),
        });
    }

    /// Reads a secret from `VAR` or the file named by `VAR_FILE` (not both).
    fn secret(&mut self, var: &'static str, file_var: &'static str, direct: Option<String>, file: Option<String>) -> Option<String> {
        match (nonempty(direct), nonempty(file)) {
            (Some(_), Some(_)) => {
                self.bad(var, format!("set either {var} or {file_var}, not both"));
                None
            }
            (Some(v), None) => Some(v),
            (None, Some(path)) => match std::fs::read_to_string(&path) {
                Ok(s) if !s.trim().is_empty() => Some(s.trim_end_matches(['\n', '\r']).to_string()),
                Ok(_) => {
                    self.bad(file_var, format!("file {path:?} is empty"));
                    None
                }
                Err(e) => {
                    self.bad(file_var, format!("cannot read file {path:?}: {e}"));
                    None
                }
            },
            (None, None) => None,
        }
    }

    fn db_url(&mut self, var: &'static str, value: Option<String>, required: bool) -> Option<DbUrl> {
        match value {
            None if required => {
                self.bad(
                    var,
                    "required: the postgresql:// URL of the database (e.g. postgresql://user:password@host:5432/dbname)",
                );
                None
            }
            None => None,
            Some(v) => match DbUrl::parse(&v) {
                Ok(u) => Some(u),
                Err(e) => {
                    // The value may contain a password: describe the problem, never echo it.
                    self.bad(var, e);
                    None
                }
            },
        }
    }

    fn uint(&mut self, var: &'static str, value: Option<String>, default: u64, min: u64, max: u64, what: &str) -> u64 {
        match nonempty(value) {
            None => default,
            Some(s) => match s.trim().parse::<u64>() {
                Ok(n) if (min..=max).contains(&n) => n,
                _ => {
                    self.bad(var, format!("expected {what}, got {s:?}"));
                    default
                }
            },
        }
    }

    fn boolean(&mut self, var: &'static str, value: Option<String>, default: bool) -> bool {
        match nonempty(value).map(|s| s.trim().to_ascii_lowercase()) {
            None => default,
            Some(s) => match s.as_str() {
                "1" | "true" | "yes" | "on" => true,
                "0" | "false" | "no" | "off" => false,
                _ => {
                    self.bad(var, format!("expected true or false, got {s:?}"));
                    default
                }
            },
        }
    }

    fn settings(&mut self, raw: RawEnv, role: Role) -> Option<Settings> {
        let storage = self.storage(&raw);
        let tools = ToolsConfig {
            pg_dump: nonempty(raw.pg_dump_path.clone()).map(PathBuf::from),
            psql: nonempty(raw.psql_path.clone()).map(PathBuf::from),
        };
        for (var, p) in [("PG_DUMP_PATH", &tools.pg_dump), ("PSQL_PATH", &tools.psql)] {
            if let Some(p) = p {
                if !p.is_file() {
                    self.bad(
                        var,
                        format!("expected the path of an executable, but {} does not exist", p.display()),
                    );
                }
            }
        }

        let db = self.secret("DATABASE_URL", "DATABASE_URL_FILE", raw.database_url, raw.database_url_file);
        let database_url = self.db_url("DATABASE_URL", db, role == Role::Backup);
        let interval = self.uint(
            "BACKUP_INTERVAL",
            raw.backup_interval,
            86_400,
            1,
            366 * 86_400,
            "whole seconds > 0 (e.g. 3600 for hourly)",
        );
        let compression_level = self.uint("COMPRESSION_LEVEL", raw.compression_level, 6, 1, 9, "a gzip level from 1 to 9") as u32;
        let days = self.uint("BACKUP_RETENTION_DAYS", raw.backup_retention_days, 7, 1, 36_500, "whole days >= 1");
        let min_keep = self.uint(
            "BACKUP_MIN_KEEP",
            raw.backup_min_keep,
            3,
            1,
            10_000,
            "a whole number of backups >= 1",
        );
        let dump_options = nonempty(raw.pg_dump_options)
            .map(|s| s.split_whitespace().map(String::from).collect::<Vec<_>>())
            .unwrap_or_default();
        for opt in &dump_options {
            let name = opt.split('=').next().unwrap_or_default();
            if FORBIDDEN_DUMP_OPTIONS.contains(&name) {
                self.bad("PG_DUMP_OPTIONS", format!("{name} is managed by pgvigil and cannot be set here"));
            }
        }
        let backup = database_url.map(|database_url| BackupConfig {
            database_url,
            interval: Duration::from_secs(interval),
            compression_level,
            retention: RetentionPolicy {
                retention_days: days,
                min_keep: min_keep as usize,
            },
            dump_options,
        });

        let vdb = self.secret(
            "VERIFY_DATABASE_URL",
            "VERIFY_DATABASE_URL_FILE",
            raw.verify_database_url,
            raw.verify_database_url_file,
        );
        let verify_url = self.db_url("VERIFY_DATABASE_URL", vdb, role == Role::Verify);
        let vinterval = self.uint(
            "VERIFY_INTERVAL",
            raw.verify_interval,
            86_400,
            1,
            366 * 86_400,
            "whole seconds > 0 (e.g. 86400 for daily)",
        );
        let queries_file = nonempty(raw.verify_queries_file).map(PathBuf::from);
        if let Some(q) = &queries_file {
            if let Err(e) = std::fs::read_to_string(q) {
                self.bad("VERIFY_QUERIES_FILE", format!("cannot read {}: {e}", q.display()));
            }
        }
        let random_rate = match nonempty(raw.verify_random_rate) {
            None => 0.2,
            Some(s) => match s.trim().parse::<f64>() {
                Ok(r) if (0.0..=1.0).contains(&r) => r,
                _ => {
                    self.bad(
                        "VERIFY_RANDOM_RATE",
                        format!("expected a fraction from 0 to 1 (e.g. 0.2), got {s:?}"),
                    );
                    0.0
                }
            },
        };
        let verify = verify_url.map(|database_url| VerifyConfig {
            database_url,
            interval: Duration::from_secs(vinterval),
            queries_file,
            random_rate,
        });

        let port = nonempty(raw.port).and_then(|s| match s.trim().parse::<u16>() {
            Ok(p) => Some(p),
            Err(_) => {
                self.bad("PORT", format!("expected a TCP port number from 0 to 65535, got {s:?}"));
                None
            }
        });
        let log_format = match nonempty(raw.log_format).map(|s| s.trim().to_ascii_lowercase()).as_deref() {
            None | Some("text") => LogFormat::Text,
            Some("json") => LogFormat::Json,
            Some(other) => {
                self.bad("LOG_FORMAT", format!("expected text or json, got {other:?}"));
                LogFormat::Text
            }
        };
        let price_per_gb_month = match nonempty(raw.storage_price_per_gb_month) {
            None => 0.023,
            Some(s) => match s.trim().parse::<f64>() {
                Ok(p) if p >= 0.0 && p.is_finite() => p,
                _ => {
                    self.bad(
                        "STORAGE_PRICE_PER_GB_MONTH",
                        format!("expected a price in dollars such as 0.023, got {s:?}"),
                    );
                    0.0
                }
            },
        };
        Some(Settings {
            storage: storage?,
            tools,
            backup,
            verify,
            port,
            log_format,
            price_per_gb_month,
            retention: RetentionPolicy {
                retention_days: days,
                min_keep: min_keep as usize,
            },
            backup_interval: Duration::from_secs(interval),
            verify_interval: Duration::from_secs(vinterval),
        })
    }

    fn storage(&mut self, raw: &RawEnv) -> Option<StorageConfig> {
        let prefix = nonempty(raw.backup_prefix.clone()).unwrap_or_else(|| "backups".into());
        let prefix = prefix.trim().trim_matches('/').to_string();
        if let Err(e) = crate::keys::validate_prefix(&prefix) {
            self.bad("BACKUP_PREFIX", e);
        }
        let access = self.secret(
            "S3_ACCESS_KEY_ID",
            "S3_ACCESS_KEY_ID_FILE",
            raw.s3_access_key_id.clone(),
            raw.s3_access_key_id_file.clone(),
        );
        let secret = self.secret(
            "S3_SECRET_ACCESS_KEY",
            "S3_SECRET_ACCESS_KEY_FILE",
            raw.s3_secret_access_key.clone(),
            raw.s3_secret_access_key_file.clone(),
        );
        let credentials = match (access, secret) {
            (Some(a), Some(s)) => Some((a, SecretString::from(s))),
            (None, None) => None,
            (Some(_), None) => {
                self.bad("S3_SECRET_ACCESS_KEY", "required when S3_ACCESS_KEY_ID is set");
                None
            }
            (None, Some(_)) => {
                self.bad("S3_ACCESS_KEY_ID", "required when S3_SECRET_ACCESS_KEY is set");
                None
            }
        };
        let endpoint = nonempty(raw.s3_endpoint.clone()).map(|e| e.trim().trim_end_matches('/').to_string());
        if let Some(e) = &endpoint {
            if !(e.starts_with("http://") || e.starts_with("https://")) || url::Url::parse(e).is_err() {
                self.bad("S3_ENDPOINT", format!("expected an http:// or https:// URL, got {e:?}"));
            }
        }
        let force_path_style = self.boolean("S3_FORCE_PATH_STYLE", raw.s3_force_path_style.clone(), endpoint.is_some());
        let sse = match nonempty(raw.s3_sse.clone()).as_deref() {
            None => None,
            Some("AES256") => Some(Sse::Aes256),
            Some("aws:kms") => Some(Sse::Kms {
                key_id: nonempty(raw.s3_sse_kms_key_id.clone()),
            }),
            Some(other) => {
                self.bad("S3_SSE", format!("expected AES256 or aws:kms, got {other:?}"));
                None
            }
        };
        if raw.s3_sse_kms_key_id.is_some() && !matches!(sse, Some(Sse::Kms { .. })) {
            self.bad("S3_SSE_KMS_KEY_ID", "only valid together with S3_SSE=aws:kms");
        }
        let part_size = nonempty(raw.s3_part_size_mb.clone()).map(|_| {
            self.uint(
                "S3_PART_SIZE_MB",
                raw.s3_part_size_mb.clone(),
                16,
                5,
                5 * 1024,
                "a part size in MiB from 5 to 5120",
            ) * 1024
                * 1024
        });
        let region = nonempty(raw.s3_region.clone()).unwrap_or_else(|| "us-east-1".into());

        let backend = match (nonempty(raw.s3_bucket.clone()), nonempty(raw.backup_dir.clone())) {
            (Some(bucket), _) => {
                if bucket.len() < 3 || bucket.len() > 63 || bucket.contains('/') {
                    self.bad(
                        "S3_BUCKET",
                        format!("expected a bucket name (3-63 characters, no '/'), got {bucket:?}"),
                    );
                }
                Backend::S3(S3Config {
                    bucket,
                    endpoint,
                    region,
                    credentials,
                    force_path_style,
                    sse,
                    storage_class: nonempty(raw.s3_storage_class.clone()),
                    part_size,
                })
            }
            (None, Some(dir)) => Backend::Local { dir: PathBuf::from(dir) },
            (None, None) => {
                self.bad(
                    "S3_BUCKET",
                    "required: the bucket to store backups in (or set BACKUP_DIR to use a local directory)",
                );
                return None;
            }
        };
        Some(StorageConfig { backend, prefix })
    }
}

/// `pg_dump` options pgvigil sets itself; allowing them would break the format it relies on.
const FORBIDDEN_DUMP_OPTIONS: &[&str] = &[
    "-F",
    "--format",
    "-f",
    "--file",
    "-Z",
    "--compress",
    "-d",
    "--dbname",
    "-h",
    "--host",
    "-p",
    "--port",
    "-U",
    "--username",
    "-W",
    "--password",
    "-C",
    "--create",
    "-j",
    "--jobs",
];

fn nonempty(v: Option<String>) -> Option<String> {
    v.filter(|s| !s.trim().is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let b = s.backup.unwrap();
        assert_eq!(b.compression_level, 6);
        assert_eq!(b.retention.retention_days, 7);
        assert_eq!(b.interval, Duration::from_secs(86_400));
        assert_eq!(s.storage.prefix, "backups");
        assert!(matches!(s.storage.backend, Backend::Local { .. }));
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
                "11",
                "COMPRESSION_LEVEL: expected a gzip level from 1 to 9, got \"11\"",
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
            ("VERIFY_RANDOM_RATE", "2", "VERIFY_RANDOM_RATE: expected a fraction from 0 to 1"),
            (
                "PG_DUMP_OPTIONS",
                "--format=custom",
                "PG_DUMP_OPTIONS: --format is managed by pgvigil",
            ),
            ("BACKUP_PREFIX", "a/../b", "BACKUP_PREFIX:"),
        ];
        let mut vars = vec![("DATABASE_URL", "postgresql://u:pw@h/db"), ("S3_BUCKET", "bucket")];
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
                ("BACKUP_DIR", "/x"),
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
        let err = load(&[("S3_BUCKET", "bkt"), ("DATABASE_URL_FILE", "/nonexistent/x")], Role::Backup)
            .unwrap_err()
            .to_string();
        assert!(err.contains("DATABASE_URL_FILE: cannot read file"), "{err}");
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
