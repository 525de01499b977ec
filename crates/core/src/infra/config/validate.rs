//! Validation: turns raw strings into typed settings, collecting every problem (each naming its
//! variable and what it expects) instead of stopping at the first. Secret values are never echoed.

use super::libpq::{libpq_url, Libpq};
use super::raw::RawEnv;
use super::settings::{BackupConfig, Settings, ToolsConfig, VerifyConfig};
use super::{Problem, Role};
use crate::infra::secret::DbUrl;
use crate::policy::retention::RetentionPolicy;
use std::path::PathBuf;
use std::time::Duration;

/// Collects problems while turning raw strings into typed values.
#[derive(Default)]
pub(super) struct Validator {
    pub(super) problems: Vec<Problem>,
}

impl Validator {
    pub(super) fn bad(&mut self, var: &'static str, message: impl Into<String>) {
        self.problems.push(Problem {
            var,
            message: message.into(),
        });
    }

    /// Reads a secret from `VAR` or the file named by `VAR_FILE` (not both).
    pub(super) fn secret(
        &mut self,
        var: &'static str,
        file_var: &'static str,
        direct: Option<String>,
        file: Option<String>,
    ) -> Option<String> {
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

    pub(super) fn uint(&mut self, var: &'static str, value: Option<String>, default: u64, min: u64, max: u64, what: &str) -> u64 {
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

    pub(super) fn boolean(&mut self, var: &'static str, value: Option<String>, default: bool) -> bool {
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

    pub(super) fn settings(&mut self, raw: RawEnv, role: Role) -> Option<Settings> {
        let libpq_env = crate::infra::secret::LibpqEnv::new(self.libpq_env(&raw));
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
        let compression_level = self.uint("COMPRESSION_LEVEL", raw.compression_level, 6, 1, 12, "a gzip level from 1 to 12") as u32;
        let days = self.uint("BACKUP_RETENTION_DAYS", raw.backup_retention_days, 7, 1, 36_500, "whole days >= 1");
        let min_keep = self.uint(
            "BACKUP_MIN_KEEP",
            raw.backup_min_keep,
            3,
            1,
            10_000,
            "a whole number of backups >= 1",
        );
        let check_interval = self.uint(
            "CHECK_INTERVAL",
            raw.check_interval,
            3600,
            1,
            31_622_400,
            "whole seconds between presence checks, 1–31622400 (e.g. 3600 for hourly)",
        );
        let calendar = self.calendar(
            [
                raw.backup_keep_hourly,
                raw.backup_keep_daily,
                raw.backup_keep_weekly,
                raw.backup_keep_monthly,
                raw.backup_keep_yearly,
            ],
            raw.backup_timezone,
        );
        let dump_options = match crate::infra::pg::dump_options::parse(&raw.pg_dump_options.unwrap_or_default()) {
            Ok(args) => args,
            Err(problems) => {
                for p in problems {
                    self.bad("PG_DUMP_OPTIONS", p);
                }
                Vec::new()
            }
        };
        let lock_wait = self.uint(
            "PG_DUMP_LOCK_WAIT_TIMEOUT",
            raw.pg_dump_lock_wait_timeout,
            60,
            0,
            86_400,
            "whole seconds (0 waits forever)",
        );
        let lock_watch = self.lock_watch(raw.pg_dump_lock_warn_after, raw.pg_dump_yield_after);
        let keep_privileges = self.keep_privileges(raw.backup_privileges);
        let table_rules = self.table_rules(raw.table_anomaly_drop_percent, raw.table_anomaly_min_rows);
        let (recipients, identities) = self.encryption(
            role,
            (raw.backup_encryption_recipients, raw.backup_encryption_recipients_file),
            (raw.backup_encryption_identity, raw.backup_encryption_identity_file),
        );
        let backup = BackupConfig {
            interval: Duration::from_secs(interval),
            compression_level,
            retention: RetentionPolicy {
                retention_days: days,
                min_keep: min_keep as usize,
                calendar,
            },
            check_interval: Duration::from_secs(check_interval),
            dump_options,
            lock_wait: (lock_wait > 0).then(|| Duration::from_secs(lock_wait)),
            lock_warn_after: lock_watch.0,
            yield_after: lock_watch.1,
            keep_privileges,
            table_rules,
            recipients,
            latest_copy: self.boolean("BACKUP_LATEST_COPY", raw.backup_latest_copy, true),
        };

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
        let queries = nonempty(raw.verify_queries);
        let queries_file = nonempty(raw.verify_queries_file).map(PathBuf::from);
        if queries.is_some() && queries_file.is_some() {
            self.bad("VERIFY_QUERIES", "set either VERIFY_QUERIES or VERIFY_QUERIES_FILE, not both");
        } else if let Some(q) = &queries_file {
            if let Err(e) = std::fs::read_to_string(q) {
                self.bad("VERIFY_QUERIES_FILE", format!("cannot read {}: {e}", q.display()));
            }
        }
        let random_rate = self.random_rate(raw.verify_random_rate);
        let verify = VerifyConfig {
            interval: Duration::from_secs(vinterval),
            queries_file,
            queries,
            random_rate,
            amcheck: self.amcheck(raw.verify_amcheck),
            timeout: self.verify_timeout(raw.verify_timeout),
        };

        let (signing, trusted) = self.authenticity(
            role,
            (raw.backup_signing_key, raw.backup_signing_key_file),
            (raw.backup_trusted_keys, raw.backup_trusted_keys_file),
        );
        let databases = self.databases(raw.backup_databases);
        let notify = self.notify(
            (raw.notify_webhook_url, raw.notify_webhook_url_file),
            (raw.heartbeat_url, raw.heartbeat_url_file),
            raw.notify_on_success,
        );
        let port = nonempty(raw.port).and_then(|s| match s.trim().parse::<u16>() {
            Ok(p) => Some(p),
            Err(_) => {
                self.bad("PORT", format!("expected a TCP port number from 0 to 65535, got {s:?}"));
                None
            }
        });
        let log_format = self.log_format(raw.log_format);
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
        let rdb = self.secret(
            "RESTORE_DATABASE_URL",
            "RESTORE_DATABASE_URL_FILE",
            raw.restore_database_url,
            raw.restore_database_url_file,
        );
        let libpq = Libpq {
            host: raw.pghost,
            port: raw.pgport,
            user: raw.pguser,
            password: raw.pgpassword,
            database: raw.pgdatabase,
            sslmode: raw.pgsslmode,
        };
        // libpq's variables describe a restore target only for the CLI: in a service's environment
        // they may mean anything.
        let rdb = rdb.or_else(|| (role == Role::Cli).then(|| libpq_url(libpq)).flatten());
        let restore_database_url = self.db_url("RESTORE_DATABASE_URL", rdb, false);
        let retry_backoff = self.uint(
            "RETRY_BACKOFF_SECS",
            raw.retry_backoff_secs,
            30,
            1,
            3600,
            "whole seconds from 1 to 3600",
        );
        Some(Settings {
            storage: storage?,
            tools,
            database_url: database_url.map(|u| u.with_environment(&libpq_env)),
            backup,
            verify_database_url: verify_url.map(|u| u.with_environment(&libpq_env)),
            verify,
            restore_database_url: restore_database_url.map(|u| u.with_environment(&libpq_env)),
            libpq: libpq_env,
            databases,
            notify,
            identities,
            signing,
            trusted,
            port,
            health: self.health_access(raw.health_address, (raw.health_token, raw.health_token_file)),
            retry_backoff: Duration::from_secs(retry_backoff),
            log_format,
            price_per_gb_month,
        })
    }
}

pub(super) fn nonempty(v: Option<String>) -> Option<String> {
    v.filter(|s| !s.trim().is_empty())
}
