//! `pgvigil report`: the weekly review computed from what is stored (backups, durations,
//! verification success rate and trend, sizes and anomalies, storage and cost). A pure function of
//! its inputs; loading them is the operator layer's job and rendering is the CLI's.

use super::anomaly::{self, Anomaly};
use crate::records::catalog::BackupEntry;
use crate::records::history::{FailureRecord, VerificationRecord};
use crate::records::keys::BackupId;
use crate::records::timeline::Timeline;
use chrono::{DateTime, Utc};
use serde::Serialize;

/// Everything `pgvigil report` needs, already loaded.
#[derive(Debug, Clone)]
pub struct ReportInput {
    /// Report time.
    pub now: DateTime<Utc>,
    /// Window length in days.
    pub days: u32,
    /// All backups under the prefix, newest first.
    pub backups: Vec<BackupEntry>,
    /// Backup durations in seconds (from manifests) of backups in the window.
    pub backup_durations: Vec<f64>,
    /// Verification records in the window, oldest first.
    pub verifications: Vec<VerificationRecord>,
    /// Failure records in the window.
    pub failures: Vec<FailureRecord>,
    /// Bytes stored under the prefix and in pgvigil's metadata area.
    pub total_bytes: u64,
    /// Number of objects stored.
    pub object_count: usize,
    /// `BACKUP_RETENTION_DAYS`.
    pub retention_days: u64,
    /// The calendar rules in words, when any is set (older backups are then expected).
    pub calendar: Option<String>,
    /// Price per GB-month.
    pub price_per_gb_month: f64,
    /// Every verification stored (verified at, backup), oldest first: for lag and coverage.
    pub verified: Vec<(DateTime<Utc>, BackupId)>,
    /// Records that could not be read (the figures leave them out).
    pub unreadable: usize,
}

impl ReportInput {
    /// The input of a report over the last `days` days of `t` (which may reach further back).
    pub fn from_timeline(t: &Timeline, now: DateTime<Utc>, days: u32, settings: ReportSettings) -> Self {
        let since = now - chrono::Duration::days(i64::from(days));
        ReportInput {
            now,
            days,
            backups: t.catalog.backups.clone(),
            backup_durations: t
                .backups
                .iter()
                .filter(|b| b.id.0 >= since)
                .filter_map(|b| b.duration_secs)
                .collect(),
            verifications: t.verifications.iter().filter(|v| v.verified_at >= since).cloned().collect(),
            failures: t.failures.iter().filter(|f| f.at >= since).cloned().collect(),
            total_bytes: t.total_bytes,
            object_count: t.object_count,
            retention_days: settings.retention_days,
            calendar: settings.calendar,
            price_per_gb_month: settings.price_per_gb_month,
            verified: t.catalog.verifications.iter().map(|v| (v.at.0, v.backup)).collect(),
            unreadable: t.unreadable,
        }
    }
}

/// The settings a report states beside its figures.
#[derive(Debug, Clone, Default)]
pub struct ReportSettings {
    /// `BACKUP_RETENTION_DAYS`.
    pub retention_days: u64,
    /// The calendar rules in words, when any is set.
    pub calendar: Option<String>,
    /// Price per GB-month.
    pub price_per_gb_month: f64,
}

/// Median and worst of a set of durations, in seconds.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct Spread {
    /// The median.
    pub median: f64,
    /// The largest.
    pub worst: f64,
}

impl Spread {
    /// `None` for an empty set.
    pub fn of(values: &[f64]) -> Option<Self> {
        let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        let n = v.len();
        let median = if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 };
        Some(Self { median, worst: v[n - 1] })
    }
}

/// The weekly review.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Report {
    /// Window length in days.
    pub days: u32,
    /// Complete backups made in the window.
    pub backups_made: usize,
    /// Failed backup attempts in the window.
    pub backups_failed: usize,
    /// Average backup duration in seconds.
    pub backup_avg_secs: Option<f64>,
    /// Verifications run in the window.
    pub verifications: usize,
    /// Of which passed.
    pub verifications_passed: usize,
    /// Passed / run, 0–1.
    pub success_rate: Option<f64>,
    /// Whether the 95% target was met.
    pub meets_target: Option<bool>,
    /// Average verification duration in seconds.
    pub verify_avg_secs: Option<f64>,
    /// Relative change of verification duration, second half of the window vs first half.
    pub verify_duration_trend: Option<f64>,
    /// Relative change in backup size over the window (last vs first).
    pub size_change: Option<f64>,
    /// Size of the newest backup.
    pub newest_size: Option<u64>,
    /// Anomalies among the window's backups: (key, anomaly).
    pub anomalies: Vec<(String, Anomaly)>,
    /// Bytes stored.
    pub total_bytes: u64,
    /// Objects stored.
    pub object_count: usize,
    /// Backups stored.
    pub backup_count: usize,
    /// Age of the oldest backup in days.
    pub oldest_age_days: Option<f64>,
    /// Retention setting in days.
    pub retention_days: u64,
    /// The calendar rules in words, when any is set.
    pub calendar: Option<String>,
    /// Projected monthly storage cost at the configured price.
    pub monthly_cost: f64,
    /// RTO: seconds to download and restore a backup, from the window's verifications.
    pub rto_secs: Option<Spread>,
    /// RPO: age of the backup's data when it was verified, from the window's verifications.
    pub rpo_secs: Option<Spread>,
    /// Verification lag: seconds from a backup being written to its first verification, for the
    /// window's backups that were verified.
    pub lag_secs: Option<Spread>,
    /// Complete backups in the window not verified yet.
    pub unverified_in_window: usize,
    /// Share (0–1) of the complete backups still stored that were ever verified.
    pub coverage: Option<f64>,
    /// Records that could not be read, left out of the figures.
    pub unreadable: usize,
}

fn avg(v: &[f64]) -> Option<f64> {
    (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
}

/// Computes the report.
pub fn compute(input: &ReportInput) -> Report {
    let since = input.now - chrono::Duration::days(i64::from(input.days));
    let complete: Vec<&BackupEntry> = input.backups.iter().filter(|b| b.complete).collect();
    let in_window: Vec<&&BackupEntry> = complete.iter().filter(|b| b.id.0 >= since).collect();
    let passed = input.verifications.iter().filter(|v| v.passed).count();
    let n = input.verifications.len();
    let rate = (n > 0).then(|| passed as f64 / n as f64);
    let durations: Vec<f64> = input.verifications.iter().map(|v| v.total_secs).collect();
    let half = durations.len() / 2;
    let trend = if half > 0 {
        match (avg(&durations[..half]), avg(&durations[half..])) {
            (Some(a), Some(b)) if a > 0.0 => Some(b / a - 1.0),
            _ => None,
        }
    } else {
        None
    };
    let size_change = match (in_window.last(), in_window.first()) {
        (Some(oldest), Some(newest)) if oldest.id != newest.id && oldest.size > 0 => Some(newest.size as f64 / oldest.size as f64 - 1.0),
        _ => None,
    };
    let mut anomalies = Vec::new();
    for b in &in_window {
        let recent: Vec<u64> = complete.iter().filter(|o| o.id < b.id).take(7).map(|o| o.size).collect();
        if let Some(a) = anomaly::assess(b.size, &recent) {
            anomalies.push((b.key.clone(), a));
        }
    }
    let oldest = input.backups.iter().map(|b| b.id).min();
    // Only restores that went all the way measure the time a restore takes.
    let rto: Vec<f64> = input.verifications.iter().filter(|v| v.passed).map(|v| v.restore_secs).collect();
    let rpo: Vec<f64> = input
        .verifications
        .iter()
        .filter_map(|v| v.rpo_secs.or_else(|| v.backup_time.map(|t| (v.verified_at - t).num_seconds())))
        .map(|s| s as f64)
        .collect();
    let first_verified = |id: BackupId| input.verified.iter().filter(|(_, b)| *b == id).map(|(at, _)| *at).min();
    let lag: Vec<f64> = in_window
        .iter()
        .filter_map(|b| first_verified(b.id).map(|at| (at - b.id.0).num_seconds() as f64))
        .collect();
    let ever = complete.iter().filter(|b| first_verified(b.id).is_some()).count();
    Report {
        days: input.days,
        backups_made: in_window.len(),
        backups_failed: input.failures.iter().filter(|f| f.at >= since).count(),
        backup_avg_secs: avg(&input.backup_durations),
        verifications: n,
        verifications_passed: passed,
        success_rate: rate,
        meets_target: rate.map(|r| r >= 0.95),
        verify_avg_secs: avg(&durations),
        verify_duration_trend: trend,
        size_change,
        newest_size: complete.first().map(|b| b.size),
        anomalies,
        total_bytes: input.total_bytes,
        object_count: input.object_count,
        backup_count: input.backups.len(),
        oldest_age_days: oldest.map(|o| (input.now - o.0).num_seconds() as f64 / 86_400.0),
        retention_days: input.retention_days,
        calendar: input.calendar.clone(),
        monthly_cost: input.total_bytes as f64 / 1e9 * input.price_per_gb_month,
        rto_secs: Spread::of(&rto),
        rpo_secs: Spread::of(&rpo),
        lag_secs: Spread::of(&lag),
        unverified_in_window: in_window.len() - lag.len(),
        coverage: (!complete.is_empty()).then(|| ever as f64 / complete.len() as f64),
        unreadable: input.unreadable,
    }
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::{entry, now, verification};
    use super::*;

    #[test]
    fn spreads_take_the_median_and_the_worst() {
        type Case = (Vec<f64>, Option<(f64, f64)>);
        let cases: Vec<Case> = vec![
            (vec![], None),
            (vec![3.0], Some((3.0, 3.0))),
            (vec![5.0, 1.0, 3.0], Some((3.0, 5.0))),
            (vec![4.0, 1.0, 2.0, 3.0], Some((2.5, 4.0))),
            (vec![f64::NAN, 2.0], Some((2.0, 2.0))),
        ];
        for (values, want) in cases {
            assert_eq!(Spread::of(&values).map(|s| (s.median, s.worst)), want, "{values:?}");
        }
    }

    #[test]
    fn report_figures_from_known_records() {
        let backups = vec![entry(1, 130), entry(25, 100), entry(49, 100), entry(73, 100), entry(24 * 10, 100)];
        let mut verifications = vec![
            verification(70, true, 10.0),
            verification(50, true, 10.0),
            verification(30, false, 20.0),
            verification(2, true, 20.0),
        ];
        // RPO as recorded, or derived from the backup's time for records that lack it.
        verifications[0].rpo_secs = Some(3600);
        verifications[1].backup_time = Some(verifications[1].verified_at - chrono::Duration::hours(2));
        let input = ReportInput {
            now: now(),
            days: 7,
            backups,
            backup_durations: vec![4.0, 6.0],
            verifications,
            failures: vec![FailureRecord {
                at: now() - chrono::Duration::hours(5),
                error: "x".into(),
                retryable: true,
            }],
            total_bytes: 2_000_000_000,
            object_count: 12,
            retention_days: 7,
            calendar: None,
            price_per_gb_month: 0.02,
            verified: vec![
                (now() - chrono::Duration::hours(239), entry(24 * 10, 1).id),
                (now() - chrono::Duration::hours(47), entry(49, 1).id),
                (now() - chrono::Duration::minutes(30), entry(1, 1).id),
                (now() - chrono::Duration::minutes(10), entry(1, 1).id),
            ],
            unreadable: 0,
        };
        let r = compute(&input);
        assert_eq!(
            r.rto_secs,
            Some(Spread { median: 10.0, worst: 20.0 }),
            "failed restores do not count"
        );
        assert_eq!(
            r.rpo_secs,
            Some(Spread {
                median: 5400.0,
                worst: 7200.0
            }),
            "records without either are left out"
        );
        assert_eq!(
            r.lag_secs,
            Some(Spread {
                median: 4500.0,
                worst: 7200.0
            })
        );
        assert_eq!(r.unverified_in_window, 2);
        assert_eq!(r.coverage, Some(0.6));
        assert_eq!(r.backups_made, 4);
        assert_eq!(r.backups_failed, 1);
        assert_eq!(r.backup_avg_secs, Some(5.0));
        assert_eq!((r.verifications, r.verifications_passed), (4, 3));
        assert_eq!(r.success_rate, Some(0.75));
        assert_eq!(r.meets_target, Some(false));
        assert_eq!(r.verify_avg_secs, Some(15.0));
        assert_eq!(r.verify_duration_trend, Some(1.0));
        assert!((r.size_change.unwrap() - 0.3).abs() < 1e-9);
        assert_eq!(r.anomalies.len(), 1, "{:?}", r.anomalies);
        assert_eq!(r.backup_count, 5);
        assert!((r.oldest_age_days.unwrap() - 10.0).abs() < 0.01);
        assert!((r.monthly_cost - 0.04).abs() < 1e-9);
    }
}
