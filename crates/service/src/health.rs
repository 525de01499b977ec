//! Health state of a daemon: what `/status` answers (healthy, or the reasons why not) and what
//! `/metrics` shows, fed by the runner and the jobs. The HTTP server is [`super::http`].

use chrono::{DateTime, Utc};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::metrics::{self, Labels, Metrics};
use super::page::Feed;
use pgvigil_core::infra::config::Role;
use pgvigil_core::records::catalog::Catalog;
use pgvigil_core::records::history::VerificationRecord;
use pgvigil_core::records::manifest::Manifest;

/// How `/status` begins the reason for a failed newest verification.
const NEWEST_FAILED: &str = "the newest backup failed verification";

/// Verdict state and metrics shared between the runner and the HTTP endpoint. A service that
/// covers several databases has one part per database ([`Health::part`]); the endpoint then
/// answers for all of them, naming the database in every reason and labelling every metric with it.
#[derive(Debug, Clone)]
pub struct Health {
    /// Shared state.
    inner: Arc<Mutex<HealthState>>,
    /// Per-database parts, when there are several.
    parts: Arc<Mutex<Vec<(String, Health)>>>,
    /// Every metric family (shared with the parts).
    metrics: Arc<Metrics>,
    /// This health's labels: `service`, and `database` for a part.
    labels: Labels,
    /// Which service it is.
    role: Role,
    /// Where the status page reads this database's records from, once storage is open.
    feed: Arc<Mutex<Option<Feed>>>,
}

#[derive(Debug)]
struct HealthState {
    started: DateTime<Utc>,
    last_success: Option<DateTime<Utc>>,
    consecutive_failures: u32,
    /// The newest success storage knows of (the newest backup, or the newest verification),
    /// which survives restarts.
    newest_stored: Option<DateTime<Utc>>,
    /// Unhealthy when the last success is older than this.
    stale_after: Duration,
    /// The verdict on the newest backup verified so far. A drill of an older backup never hides it.
    last_verification: Option<LastVerdict>,
    /// The labels of the `pgvigil_postgres_info` series set last.
    versions: Option<Labels>,
    /// Kept backups the last presence check found missing or changed.
    absent: usize,
}

/// A verification's verdict, as health needs it.
#[derive(Debug)]
struct LastVerdict {
    /// When the backup was taken.
    backup_time: DateTime<Utc>,
    /// Its key.
    key: String,
    /// Whether it passed (the reasons, which may quote data, stay in the record).
    passed: bool,
}

impl Health {
    /// New state for the service of `role`; `stale_after` is typically twice the interval plus
    /// slack.
    pub fn new(stale_after: Duration, role: Role) -> Self {
        let metrics = Arc::new(Metrics::new());
        let h = Self::with_metrics(stale_after, metrics, vec![("service", role.name().to_string())], role);
        h.metrics
            .build
            .get_or_create(&metrics::with(&h.labels, "version", env!("CARGO_PKG_VERSION")))
            .set(1);
        h
    }

    fn with_metrics(stale_after: Duration, metrics: Arc<Metrics>, labels: Labels, role: Role) -> Self {
        let h = Self {
            inner: Arc::new(Mutex::new(HealthState {
                started: Utc::now(),
                last_success: None,
                consecutive_failures: 0,
                newest_stored: None,
                stale_after,
                last_verification: None,
                versions: None,
                absent: 0,
            })),
            parts: Arc::default(),
            metrics,
            labels,
            role,
            feed: Arc::default(),
        };
        h.zero_series(true);
        h
    }

    /// Creates (or removes) the counters every service has from the start, at zero, so that
    /// `increase()` and `rate()` see the first event too.
    fn zero_series(&self, create: bool) {
        let m = &self.metrics;
        let causes: &[&str] = if self.role == Role::Backup {
            &["database", "storage", "dump", "lease_lost", "yielded", "shutdown"]
        } else {
            &[
                "database",
                "storage",
                "restore",
                "scratch",
                "version",
                "queries_file",
                "key",
                "timeout",
                "vanished",
                "shutdown",
            ]
        };
        let mut counters = vec![
            (&m.runs, self.label("result", "success")),
            (&m.runs, self.label("result", "failure")),
        ];
        counters.extend(causes.iter().map(|c| (&m.failures, self.label("cause", c))));
        if self.role == Role::Backup {
            counters.push((&m.anomalies, self.label("kind", "size")));
            counters.push((&m.anomalies, self.label("kind", "table")));
            counters.push((&m.uploaded, self.labels.clone()));
        }
        for (family, labels) in counters {
            if create {
                drop(family.get_or_create(&labels));
            } else {
                family.remove(&labels);
            }
        }
        if create {
            m.consecutive_failures.get_or_create(&self.labels).set(0);
        } else {
            m.consecutive_failures.remove(&self.labels);
        }
    }

    /// The newest backup verified so far: its key and whether it passed.
    pub fn newest_verdict(&self) -> Option<(String, bool)> {
        self.with(|s| s.last_verification.as_ref().map(|v| (v.key.clone(), v.passed)))
    }

    /// A part of this health for one database (its runs and verdicts are reported there).
    pub fn part(&self, database: &str) -> Health {
        let stale_after = self.with(|s| s.stale_after);
        // The group itself never runs: its series would only mix label sets within a family.
        self.zero_series(false);
        let part = Health::with_metrics(stale_after, self.metrics.clone(), self.label("database", database), self.role);
        self.parts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push((database.to_string(), part.clone()));
        part
    }

    /// Tells the status page where this database's records are.
    pub fn attach(&self, feed: Feed) {
        *self.feed.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(feed);
    }

    /// What the status page shows: per database, its name (the prefix for a service that covers
    /// one), its feed once attached, and what only this process knows: why it calls itself
    /// unhealthy (but a failed verification, which the page reads from its record) and the kept
    /// backups its last presence check found missing.
    pub fn feeds(&self) -> Vec<(String, Option<Feed>, Vec<String>)> {
        let view = |h: &Health| {
            let feed = h.feed.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
            let mut problems: Vec<String> = h.own_verdict().1.into_iter().filter(|r| !r.starts_with(NEWEST_FAILED)).collect();
            let absent = h.with(|s| s.absent);
            if absent > 0 {
                problems.push(format!(
                    "{absent} backup(s) that retention keeps are missing from storage or changed (pgvigil check --presence lists them)"
                ));
            }
            (feed, problems)
        };
        let parts = self.parts();
        if parts.is_empty() {
            let (feed, problems) = view(self);
            let name = feed
                .as_ref()
                .map_or_else(|| self.role.name().to_string(), |f| f.prefix().to_string());
            return vec![(name, feed, problems)];
        }
        parts
            .iter()
            .map(|(db, h)| {
                let (feed, problems) = view(h);
                (db.clone(), feed, problems)
            })
            .collect()
    }

    fn parts(&self) -> Vec<(String, Health)> {
        self.parts.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    fn with<T>(&self, f: impl FnOnce(&mut HealthState) -> T) -> T {
        let mut g = self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        f(&mut g)
    }

    fn label(&self, key: &'static str, value: &str) -> Labels {
        metrics::with(&self.labels, key, value)
    }

    /// Records the configured interval between runs.
    pub fn record_interval(&self, interval: Duration) {
        let secs = i64::try_from(interval.as_secs()).unwrap_or(i64::MAX);
        self.metrics.interval.get_or_create(&self.labels).set(secs);
    }

    /// Records a successful run that took `took`.
    pub fn record_success(&self, took: Duration) {
        let now = Utc::now();
        self.with(|s| {
            s.last_success = Some(now);
            s.consecutive_failures = 0;
        });
        let m = &self.metrics;
        m.runs.get_or_create(&self.label("result", "success")).inc();
        m.consecutive_failures.get_or_create(&self.labels).set(0);
        m.last_success.get_or_create(&self.labels).set(now.timestamp());
        m.last_duration.get_or_create(&self.labels).set(took.as_secs_f64());
    }

    /// Records a failed run (`cause`: a short word such as `database` or `storage`) that took
    /// `took` (`None`: it never started, e.g. the schedule could not be read).
    pub fn record_failure(&self, cause: &str, took: Option<Duration>) {
        let now = Utc::now();
        // A backup that gave way to a migration (PG_DUMP_YIELD_AFTER) did what it was asked: it
        // is counted by cause, not towards the failures in a row that page someone.
        let in_a_row = self.with(|s| {
            if cause != "yielded" {
                s.consecutive_failures += 1;
            }
            s.consecutive_failures
        });
        let m = &self.metrics;
        m.runs.get_or_create(&self.label("result", "failure")).inc();
        m.failures.get_or_create(&self.label("cause", cause)).inc();
        m.consecutive_failures.get_or_create(&self.labels).set(i64::from(in_a_row));
        m.last_failure.get_or_create(&self.labels).set(now.timestamp());
        if let Some(took) = took {
            m.last_duration.get_or_create(&self.labels).set(took.as_secs_f64());
        }
    }

    /// Records a backup this process took: its sizes, its upload, its anomalies and versions.
    pub fn record_backup(&self, manifest: &Manifest, size_anomaly: bool, table_anomaly: bool) {
        let m = &self.metrics;
        let to_i64 = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        m.backup_size
            .get_or_create(&self.label("format", "compressed"))
            .set(to_i64(manifest.size));
        m.backup_size
            .get_or_create(&self.label("format", "sql"))
            .set(to_i64(manifest.uncompressed_size));
        m.uploaded.get_or_create(&self.labels).inc_by(manifest.size);
        for (kind, raised) in [("size", size_anomaly), ("table", table_anomaly)] {
            if raised {
                m.anomalies.get_or_create(&self.label("kind", kind)).inc();
            }
        }
        self.record_versions(&manifest.server_version, &manifest.pg_dump_version);
    }

    fn record_versions(&self, server: &str, pg_dump: &str) {
        if server.is_empty() {
            return;
        }
        let labels = metrics::with(&self.label("server_version", server), "pg_dump_version", pg_dump);
        // One series: the versions last seen.
        let before = self.with(|s| s.versions.replace(labels.clone()));
        if let Some(before) = before.filter(|b| *b != labels) {
            self.metrics.postgres.remove(&before);
        }
        self.metrics.postgres.get_or_create(&labels).set(1);
    }

    /// Whether `destination` lacks the newest backup.
    pub fn record_behind(&self, destination: &str, behind: bool) {
        self.metrics
            .behind
            .get_or_create(&self.label("destination", destination))
            .set(i64::from(behind));
    }

    /// What the presence check found: how many kept backups are gone or changed.
    pub fn record_absent(&self, count: usize) {
        self.with(|s| s.absent = count);
        self.metrics
            .absent
            .get_or_create(&self.labels)
            .set(i64::try_from(count).unwrap_or(i64::MAX));
    }

    /// Records what storage holds now: the newest backup, how many and how big, and how far
    /// verification trails the newest backup.
    pub fn record_catalog(&self, cat: &Catalog) {
        let m = &self.metrics;
        let complete: Vec<_> = cat.backups.iter().filter(|b| b.complete).collect();
        m.backups_stored
            .get_or_create(&self.labels)
            .set(i64::try_from(complete.len()).unwrap_or(i64::MAX));
        let bytes: u64 = complete.iter().map(|b| b.size).sum();
        m.storage_used
            .get_or_create(&self.labels)
            .set(i64::try_from(bytes).unwrap_or(i64::MAX));
        m.future_dated
            .get_or_create(&self.labels)
            .set(i64::try_from(cat.future.len()).unwrap_or(i64::MAX));
        if let Some(v) = cat.verifications.last() {
            m.newest_verification.get_or_create(&self.labels).set(v.at.0.timestamp());
        }
        let newest_success = if self.role == Role::Verify {
            cat.verifications.last().map(|v| v.at.0)
        } else {
            cat.newest_complete().map(|b| b.id.0)
        };
        self.with(|s| s.newest_stored = newest_success);
        let Some(newest) = cat.newest_complete() else { return };
        m.newest_backup.get_or_create(&self.labels).set(newest.id.0.timestamp());
        let verified = cat.verifications.iter().filter(|v| v.passed.is_some()).map(|v| v.backup).max();
        if let Some(verified) = verified {
            let lag = (newest.id.0 - verified.0).num_seconds().max(0);
            m.verification_lag.get_or_create(&self.labels).set(lag);
        }
    }

    /// Records a verification's verdict on the backup taken at `backup_time`. Only the newest
    /// backup's verdict counts: a drill of an older one that passes does not turn a failed newest
    /// backup green.
    pub fn record_verification(&self, backup_time: DateTime<Utc>, rec: &VerificationRecord) {
        let newest = self.with(|s| {
            let newest = s.last_verification.as_ref().is_none_or(|v| backup_time >= v.backup_time);
            if newest {
                s.last_verification = Some(LastVerdict {
                    backup_time,
                    key: rec.key.clone(),
                    passed: rec.passed,
                });
            }
            newest
        });
        let m = &self.metrics;
        m.rto.get_or_create(&self.labels).set(rec.restore_secs);
        if let Some(rpo) = rec.rpo_secs {
            m.rpo.get_or_create(&self.labels).set(rpo);
        }
        let v = &rec.evidence.versions;
        self.record_versions(&v.source_server, &v.pg_dump);
        if newest {
            m.verification_passed.get_or_create(&self.labels).set(i64::from(rec.passed));
            m.verification_at.get_or_create(&self.labels).set(rec.verified_at.timestamp());
            m.verified_backup.get_or_create(&self.labels).set(backup_time.timestamp());
        }
    }

    /// Healthy unless 3+ runs in a row failed, the last success is too old, or the newest
    /// verification failed — for any database, when there are several; the reasons when not.
    pub fn verdict(&self) -> (bool, Vec<String>) {
        let parts = self.parts();
        if !parts.is_empty() {
            let reasons: Vec<String> = parts
                .iter()
                .flat_map(|(db, h)| h.own_verdict().1.into_iter().map(move |r| format!("database {db}: {r}")))
                .collect();
            return (reasons.is_empty(), reasons);
        }
        self.own_verdict()
    }

    fn own_verdict(&self) -> (bool, Vec<String>) {
        self.with(|s| {
            // After a restart, storage knows when the last success was; before the first
            // listing, the start is the reference.
            let reference = s.last_success.max(s.newest_stored).unwrap_or(s.started);
            let age = (Utc::now() - reference).to_std().unwrap_or_default();
            let mut reasons = Vec::new();
            if s.consecutive_failures >= 3 {
                reasons.push(format!("{} consecutive failed runs", s.consecutive_failures));
            }
            if age > s.stale_after {
                reasons.push(format!("no successful run for {}s", age.as_secs()));
            }
            if let Some(LastVerdict { key, passed: false, .. }) = &s.last_verification {
                reasons.push(format!(
                    "{NEWEST_FAILED} ({key}); `pgvigil status` and its verification record say why"
                ));
            }
            (reasons.is_empty(), reasons)
        })
    }

    /// The metrics as OpenMetrics text (each family once, a series per database when there are
    /// several).
    pub fn metrics(&self) -> String {
        self.metrics.encode()
    }
}

#[cfg(test)]
#[path = "health_tests.rs"]
mod tests;
