//! The Prometheus metrics of both services, kept with the `prometheus-client` crate and served on
//! `/metrics` as OpenMetrics text. The names are part of the product: docs/alerts.md lists them
//! and docs/prometheus-alerts.yml alerts on them, so renaming one breaks operators' alerts.
//!
//! Every sample carries `service` (`backup` or `verify`) and, when the service covers several
//! databases, `database`.

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

/// A sample's labels: `service`, maybe `database`, and the metric's own.
pub type Labels = Vec<(&'static str, String)>;

type Seconds = Gauge<f64, AtomicU64>;

/// Every metric family, shared by the parts of a service that covers several databases.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// `pgvigil_runs_total{result}`: runs by outcome (`success`, `failure`).
    pub runs: Family<Labels, Counter>,
    /// `pgvigil_failures_total{cause}`: failed runs by cause.
    pub failures: Family<Labels, Counter>,
    /// `pgvigil_consecutive_failures`.
    pub consecutive_failures: Family<Labels, Gauge>,
    /// `pgvigil_last_success_timestamp_seconds`: the last successful run of this process.
    pub last_success: Family<Labels, Gauge>,
    /// `pgvigil_last_failure_timestamp_seconds`.
    pub last_failure: Family<Labels, Gauge>,
    /// `pgvigil_last_run_duration_seconds`: how long the last run took, successful or not.
    pub last_duration: Family<Labels, Seconds>,
    /// `pgvigil_newest_backup_timestamp_seconds`: when the newest complete backup in storage was
    /// taken (read from storage, so right after a restart too).
    pub newest_backup: Family<Labels, Gauge>,
    /// `pgvigil_backups_stored` and `pgvigil_storage_used_bytes`: complete backups under the prefix.
    pub backups_stored: Family<Labels, Gauge>,
    /// See `backups_stored`.
    pub storage_used: Family<Labels, Gauge>,
    /// `pgvigil_future_dated_backups`: backups dated later than this host's clock allows
    /// (ignored and left in place).
    pub future_dated: Family<Labels, Gauge>,
    /// `pgvigil_backups_absent`: backups retention keeps that are gone from storage or not the
    /// size their manifest records (the presence check).
    pub absent: Family<Labels, Gauge>,
    /// `pgvigil_destination_behind{destination}`: 1 while a destination lacks the newest backup
    /// (it missed it, and catch-up has not copied it yet), with a second destination.
    pub behind: Family<Labels, Gauge>,
    /// `pgvigil_last_backup_size_bytes{format}`: `compressed` (the object) and `sql`.
    pub backup_size: Family<Labels, Gauge>,
    /// `pgvigil_uploaded_bytes_total`: backup objects uploaded by this process.
    pub uploaded: Family<Labels, Counter>,
    /// `pgvigil_anomalies_total{kind}`: `size` and `table` anomalies raised.
    pub anomalies: Family<Labels, Counter>,
    /// `pgvigil_newest_verification_timestamp_seconds`: when the newest verification record in
    /// storage was made (any backup, drills included; read from storage).
    pub newest_verification: Family<Labels, Gauge>,
    /// `pgvigil_last_verification_passed`: 1 or 0, the newest verified backup's verdict.
    pub verification_passed: Family<Labels, Gauge>,
    /// `pgvigil_last_verification_timestamp_seconds`: when that verdict was reached.
    pub verification_at: Family<Labels, Gauge>,
    /// `pgvigil_last_verified_backup_timestamp_seconds`: when the backup it judged was taken.
    pub verified_backup: Family<Labels, Gauge>,
    /// `pgvigil_verification_lag_seconds`: how much newer the newest backup is than the newest
    /// verified one (0 when the newest backup has a verdict).
    pub verification_lag: Family<Labels, Gauge>,
    /// `pgvigil_last_verification_rto_seconds`: download and restore time of the last verification.
    pub rto: Family<Labels, Seconds>,
    /// `pgvigil_last_verification_rpo_seconds`: the age of its backup's data when it was verified.
    pub rpo: Family<Labels, Gauge>,
    /// `pgvigil_interval_seconds`: the configured interval, so that alert rules need not repeat it.
    pub interval: Family<Labels, Gauge>,
    /// `pgvigil_build_info{version}` = 1.
    pub build: Family<Labels, Gauge>,
    /// `pgvigil_postgres_info{server_version, pg_dump_version}` = 1, from the last backup or
    /// verification.
    pub postgres: Family<Labels, Gauge>,
}

impl Metrics {
    /// Every family, registered once.
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let m = Self {
            registry: Registry::default(),
            runs: Family::default(),
            failures: Family::default(),
            consecutive_failures: Family::default(),
            last_success: Family::default(),
            last_failure: Family::default(),
            last_duration: Family::default(),
            newest_backup: Family::default(),
            backups_stored: Family::default(),
            storage_used: Family::default(),
            future_dated: Family::default(),
            absent: Family::default(),
            behind: Family::default(),
            backup_size: Family::default(),
            uploaded: Family::default(),
            anomalies: Family::default(),
            newest_verification: Family::default(),
            verification_passed: Family::default(),
            verification_at: Family::default(),
            verified_backup: Family::default(),
            verification_lag: Family::default(),
            rto: Family::default(),
            rpo: Family::default(),
            interval: Family::default(),
            build: Family::default(),
            postgres: Family::default(),
        };
        // Counters get `_total` appended by the crate.
        let r = &mut registry;
        r.register("pgvigil_runs", "Runs by result (success, failure)", m.runs.clone());
        r.register("pgvigil_failures", "Failed runs by cause", m.failures.clone());
        r.register(
            "pgvigil_consecutive_failures",
            "Runs failed in a row",
            m.consecutive_failures.clone(),
        );
        r.register(
            "pgvigil_last_success_timestamp_seconds",
            "When this process last ran successfully",
            m.last_success.clone(),
        );
        r.register(
            "pgvigil_last_failure_timestamp_seconds",
            "When this process last failed a run",
            m.last_failure.clone(),
        );
        r.register(
            "pgvigil_last_run_duration_seconds",
            "How long the last run took",
            m.last_duration.clone(),
        );
        r.register(
            "pgvigil_newest_backup_timestamp_seconds",
            "When the newest complete backup in storage was taken",
            m.newest_backup.clone(),
        );
        r.register("pgvigil_backups_stored", "Complete backups in storage", m.backups_stored.clone());
        r.register(
            "pgvigil_storage_used_bytes",
            "Bytes of complete backups in storage",
            m.storage_used.clone(),
        );
        r.register(
            "pgvigil_future_dated_backups",
            "Backups in storage dated later than this host's clock allows (ignored)",
            m.future_dated.clone(),
        );
        r.register(
            "pgvigil_backups_absent",
            "Kept backups gone from storage or not the size their manifest records",
            m.absent.clone(),
        );
        r.register(
            "pgvigil_destination_behind",
            "1 while a destination lacks the newest backup (catch-up copies it once it can)",
            m.behind.clone(),
        );
        r.register(
            "pgvigil_last_backup_size_bytes",
            "Size of the last backup taken by this process (format: compressed, sql)",
            m.backup_size.clone(),
        );
        r.register(
            "pgvigil_uploaded_bytes",
            "Bytes of backups uploaded by this process",
            m.uploaded.clone(),
        );
        r.register("pgvigil_anomalies", "Anomalies raised by kind (size, table)", m.anomalies.clone());
        r.register(
            "pgvigil_newest_verification_timestamp_seconds",
            "When the newest verification record in storage was made",
            m.newest_verification.clone(),
        );
        r.register(
            "pgvigil_last_verification_passed",
            "1 when the newest verified backup passed, 0 when it failed",
            m.verification_passed.clone(),
        );
        r.register(
            "pgvigil_last_verification_timestamp_seconds",
            "When the newest verified backup's verdict was reached",
            m.verification_at.clone(),
        );
        r.register(
            "pgvigil_last_verified_backup_timestamp_seconds",
            "When the newest verified backup was taken",
            m.verified_backup.clone(),
        );
        r.register(
            "pgvigil_verification_lag_seconds",
            "How much newer the newest backup is than the newest verified one",
            m.verification_lag.clone(),
        );
        r.register(
            "pgvigil_last_verification_rto_seconds",
            "Download and restore time of the last verification",
            m.rto.clone(),
        );
        r.register(
            "pgvigil_last_verification_rpo_seconds",
            "Age of the verified backup's data when it was verified",
            m.rpo.clone(),
        );
        r.register(
            "pgvigil_interval_seconds",
            "Configured seconds between runs (BACKUP_INTERVAL, VERIFY_INTERVAL)",
            m.interval.clone(),
        );
        r.register("pgvigil_build_info", "pgvigil's version", m.build.clone());
        r.register(
            "pgvigil_postgres_info",
            "Versions of the PostgreSQL server and pg_dump last seen",
            m.postgres.clone(),
        );
        Self { registry, ..m }
    }

    /// OpenMetrics text of every family.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// `labels` with one more.
pub fn with(labels: &Labels, key: &'static str, value: &str) -> Labels {
    let mut l = labels.clone();
    l.push((key, value.to_string()));
    l
}
