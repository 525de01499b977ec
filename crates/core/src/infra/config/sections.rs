//! The settings of each part, validated next to one another: the client tools, how backups are
//! taken and kept, how they are verified, where a restore goes, and the small settings of the
//! services (port, price). Each reads its variables out of the raw environment and reports every
//! problem to the [`Validator`].

use super::libpq::{libpq_url, Libpq};
use super::raw::RawEnv;
use super::settings::{BackupConfig, ToolsConfig, VerifyConfig};
use super::validate::{nonempty, Validator};
use super::Role;
use crate::infra::secret::DbUrl;
use crate::policy::retention::RetentionPolicy;
use std::path::PathBuf;
use std::time::Duration;

impl Validator {
    /// `PG_DUMP_PATH`, `PSQL_PATH`: each, when set, an existing file.
    pub(super) fn tools(&mut self, raw: &mut RawEnv) -> ToolsConfig {
        let tools = ToolsConfig {
            pg_dump: nonempty(raw.pg_dump_path.take()).map(PathBuf::from),
            psql: nonempty(raw.psql_path.take()).map(PathBuf::from),
        };
        for (var, p) in [("PG_DUMP_PATH", &tools.pg_dump), ("PSQL_PATH", &tools.psql)] {
            if let Some(p) = p.as_ref().filter(|p| !p.is_file()) {
                self.bad(
                    var,
                    format!("expected the path of an executable, but {} does not exist", p.display()),
                );
            }
        }
        tools
    }

    /// How backups are taken and kept (the encryption recipients are set by the caller).
    pub(super) fn backup(&mut self, raw: &mut RawEnv) -> BackupConfig {
        let interval = self.uint(
            "BACKUP_INTERVAL",
            raw.backup_interval.take(),
            86_400,
            1,
            366 * 86_400,
            "whole seconds > 0 (e.g. 3600 for hourly)",
        );
        let compression_level = self.uint(
            "COMPRESSION_LEVEL",
            raw.compression_level.take(),
            6,
            1,
            12,
            "a gzip level from 1 to 12",
        ) as u32;
        let days = self.uint(
            "BACKUP_RETENTION_DAYS",
            raw.backup_retention_days.take(),
            7,
            1,
            36_500,
            "whole days >= 1",
        );
        let min_keep = self.uint(
            "BACKUP_MIN_KEEP",
            raw.backup_min_keep.take(),
            3,
            1,
            10_000,
            "a whole number of backups >= 1",
        );
        let check_interval = self.uint(
            "CHECK_INTERVAL",
            raw.check_interval.take(),
            3600,
            1,
            31_622_400,
            "whole seconds between presence checks, 1–31622400 (e.g. 3600 for hourly)",
        );
        let calendar = self.calendar(
            [
                raw.backup_keep_hourly.take(),
                raw.backup_keep_daily.take(),
                raw.backup_keep_weekly.take(),
                raw.backup_keep_monthly.take(),
                raw.backup_keep_yearly.take(),
            ],
            raw.backup_timezone.take(),
        );
        let dump_options = match crate::infra::pg::dump_options::parse(&raw.pg_dump_options.take().unwrap_or_default()) {
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
            raw.pg_dump_lock_wait_timeout.take(),
            60,
            0,
            86_400,
            "whole seconds (0 waits forever)",
        );
        let lock_watch = self.lock_watch(raw.pg_dump_lock_warn_after.take(), raw.pg_dump_yield_after.take());
        BackupConfig {
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
            keep_privileges: self.keep_privileges(raw.backup_privileges.take()),
            table_rules: self.table_rules(raw.table_anomaly_drop_percent.take(), raw.table_anomaly_min_rows.take()),
            recipients: Vec::new(),
            latest_copy: self.boolean("BACKUP_LATEST_COPY", raw.backup_latest_copy.take(), true),
        }
    }

    /// How backups are verified.
    pub(super) fn verify(&mut self, raw: &mut RawEnv) -> VerifyConfig {
        let interval = self.uint(
            "VERIFY_INTERVAL",
            raw.verify_interval.take(),
            86_400,
            1,
            366 * 86_400,
            "whole seconds > 0 (e.g. 86400 for daily)",
        );
        let queries = nonempty(raw.verify_queries.take());
        let queries_file = nonempty(raw.verify_queries_file.take()).map(PathBuf::from);
        if queries.is_some() && queries_file.is_some() {
            self.bad("VERIFY_QUERIES", "set either VERIFY_QUERIES or VERIFY_QUERIES_FILE, not both");
        } else if let Some(q) = &queries_file {
            if let Err(e) = std::fs::read_to_string(q) {
                self.bad("VERIFY_QUERIES_FILE", format!("cannot read {}: {e}", q.display()));
            }
        }
        VerifyConfig {
            interval: Duration::from_secs(interval),
            queries_file,
            queries,
            random_rate: self.random_rate(raw.verify_random_rate.take()),
            amcheck: self.amcheck(raw.verify_amcheck.take()),
            timeout: self.verify_timeout(raw.verify_timeout.take()),
            jobs: self.verify_jobs(raw.verify_jobs.take()),
        }
    }

    /// Where `pgvigil restore` goes: `RESTORE_DATABASE_URL(_FILE)`, or for the CLI only, libpq's
    /// variables (in a service's environment they may mean anything).
    pub(super) fn restore_target(&mut self, raw: &mut RawEnv, role: Role) -> Option<DbUrl> {
        let url = self.secret(
            "RESTORE_DATABASE_URL",
            "RESTORE_DATABASE_URL_FILE",
            raw.restore_database_url.take(),
            raw.restore_database_url_file.take(),
        );
        let libpq = Libpq {
            host: raw.pghost.take(),
            port: raw.pgport.take(),
            user: raw.pguser.take(),
            password: raw.pgpassword.take(),
            database: raw.pgdatabase.take(),
            sslmode: raw.pgsslmode.take(),
        };
        let url = url.or_else(|| (role == Role::Cli).then(|| libpq_url(libpq)).flatten());
        self.db_url("RESTORE_DATABASE_URL", url, false)
    }

    /// `PORT`: a TCP port.
    pub(super) fn port(&mut self, value: Option<String>) -> Option<u16> {
        nonempty(value).and_then(|s| match s.trim().parse::<u16>() {
            Ok(p) => Some(p),
            Err(_) => {
                self.bad("PORT", format!("expected a TCP port number from 0 to 65535, got {s:?}"));
                None
            }
        })
    }

    /// `STORAGE_PRICE_PER_GB_MONTH`: dollars, 0.023 unless set.
    pub(super) fn price(&mut self, value: Option<String>) -> f64 {
        match nonempty(value) {
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
        }
    }
}
