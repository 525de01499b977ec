//! The operator views computed from what is stored: `status` (with a Nagios-style verdict) and
//! the weekly `report`. Pure functions of their inputs, so they are tested with known records.

use crate::anomaly::{self, Anomaly};
use crate::catalog::{BackupEntry, FailureRecord, VerificationRecord};
use chrono::{DateTime, Utc};
use serde::Serialize;
use std::fmt::Write as _;
use std::time::Duration;

/// Grace added to intervals before something counts as late.
const GRACE: i64 = 3600;

/// Nagios-style verdict: the process exit code of `pgvigil status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub enum Verdict {
    /// Exit 0.
    Ok,
    /// Exit 1.
    Warning,
    /// Exit 2.
    Critical,
}

impl Verdict {
    /// Exit code for monitoring systems.
    pub fn exit_code(self) -> u8 {
        self as u8
    }
}

/// Judges freshness and health; returns the verdict and every problem found.
pub fn assess_status(
    now: DateTime<Utc>,
    newest: Option<&BackupEntry>,
    last_verification: Option<&VerificationRecord>,
    last_failure: Option<&FailureRecord>,
    backup_interval: Duration,
    verify_interval: Duration,
) -> (Verdict, Vec<String>) {
    let mut problems: Vec<(Verdict, String)> = Vec::new();
    let bi = backup_interval.as_secs() as i64;
    let vi = verify_interval.as_secs() as i64;
    match newest {
        None => problems.push((Verdict::Critical, "no complete backup exists".into())),
        Some(b) => {
            let age = (now - b.id.0).num_seconds();
            if age > 2 * bi + GRACE {
                problems.push((
                    Verdict::Critical,
                    format!(
                        "the newest backup is {} old; backups are due every {}",
                        human_secs(age),
                        human_secs(bi)
                    ),
                ));
            } else if age > bi + GRACE {
                problems.push((
                    Verdict::Warning,
                    format!(
                        "the newest backup is {} old; one was due {} ago",
                        human_secs(age),
                        human_secs(age - bi)
                    ),
                ));
            }
            if b.size == 0 {
                problems.push((Verdict::Critical, "the newest backup is empty".into()));
            }
            if let Some(f) = last_failure.filter(|f| f.at > b.id.0) {
                problems.push((Verdict::Warning, format!("the last backup attempt failed: {}", f.error)));
            }
        }
    }
    match last_verification {
        None => problems.push((Verdict::Warning, "no backup has been verified yet".into())),
        Some(v) => {
            if !v.passed {
                problems.push((
                    Verdict::Critical,
                    format!("the last verification failed ({}): {}", v.key, v.reasons.join("; ")),
                ));
            }
            let age = (now - v.verified_at).num_seconds();
            if age > 2 * vi + GRACE {
                problems.push((Verdict::Warning, format!("the last verification was {} ago", human_secs(age))));
            }
        }
    }
    let verdict = problems.iter().map(|(v, _)| *v).max().unwrap_or(Verdict::Ok);
    (verdict, problems.into_iter().map(|(_, p)| p).collect())
}

/// `3d 4h`, `2h 5m`, `45s`.
pub fn human_secs(s: i64) -> String {
    let s = s.max(0);
    match s {
        0..=119 => format!("{s}s"),
        120..=7199 => format!("{}m", s / 60),
        7200..=172_799 => format!("{}h {}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d {}h", s / 86_400, s % 86_400 / 3600),
    }
}

/// `1.5 MB`
pub fn human_bytes(b: u64) -> String {
    let units = ["B", "KB", "MB", "GB", "TB"];
    let mut v = b as f64;
    let mut u = 0;
    while v >= 1000.0 && u < units.len() - 1 {
        v /= 1000.0;
        u += 1;
    }
    if u == 0 {
        format!("{b} B")
    } else {
        format!("{v:.1} {}", units[u])
    }
}

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
    /// Price per GB-month.
    pub price_per_gb_month: f64,
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
    /// Projected monthly storage cost at the configured price.
    pub monthly_cost: f64,
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
        monthly_cost: input.total_bytes as f64 / 1e9 * input.price_per_gb_month,
    }
}

fn pct(v: f64) -> String {
    format!("{:+.0}%", v * 100.0)
}

/// Human-readable rendering.
pub fn render(r: &Report) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "pgvigil report — last {} days", r.days);
    let _ = writeln!(s, "\nBackups");
    let _ = writeln!(s, "  made:                {}", r.backups_made);
    let _ = writeln!(s, "  failed attempts:     {}", r.backups_failed);
    let _ = writeln!(
        s,
        "  average duration:    {}",
        r.backup_avg_secs.map_or("-".into(), |d| format!("{d:.1}s"))
    );
    let _ = writeln!(s, "  newest size:         {}", r.newest_size.map_or("-".into(), human_bytes));
    let _ = writeln!(s, "  size trend:          {}", r.size_change.map_or("-".into(), pct));
    if r.anomalies.is_empty() {
        let _ = writeln!(s, "  anomalies:           none");
    } else {
        for (k, a) in &r.anomalies {
            let _ = writeln!(s, "  anomaly ({:?}):  {k}: {}", a.severity, a.message);
        }
    }
    let _ = writeln!(s, "\nVerification");
    let _ = writeln!(s, "  runs:                {} ({} passed)", r.verifications, r.verifications_passed);
    let rate = match (r.success_rate, r.meets_target) {
        (Some(x), Some(true)) => format!("{:.1}% (target 95%: met)", x * 100.0),
        (Some(x), _) => format!("{:.1}% (target 95%: MISSED)", x * 100.0),
        _ => "- (no verifications in the window)".into(),
    };
    let _ = writeln!(s, "  success rate:        {rate}");
    let _ = writeln!(
        s,
        "  average duration:    {}",
        r.verify_avg_secs.map_or("-".into(), |d| format!("{d:.1}s"))
    );
    let _ = writeln!(s, "  duration trend:      {}", r.verify_duration_trend.map_or("-".into(), pct));
    let _ = writeln!(s, "\nStorage");
    let _ = writeln!(
        s,
        "  total:               {} in {} objects ({} backups)",
        human_bytes(r.total_bytes),
        r.object_count,
        r.backup_count
    );
    let oldest = match r.oldest_age_days {
        Some(d) if d > r.retention_days as f64 + 1.0 => {
            format!("{d:.1} days (retention {} days: retention is not keeping up)", r.retention_days)
        }
        Some(d) => format!("{d:.1} days (retention {} days)", r.retention_days),
        None => "-".into(),
    };
    let _ = writeln!(s, "  oldest backup:       {oldest}");
    let _ = writeln!(s, "  projected cost:      ${:.2} per month", r.monthly_cost);
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::BackupId;
    use chrono::TimeZone;

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 25, 12, 0, 0).unwrap()
    }
    fn entry(hours_ago: i64, size: u64) -> BackupEntry {
        let id = BackupId::at(now() - chrono::Duration::hours(hours_ago));
        BackupEntry {
            id,
            key: format!("p/{}", id.file_name()),
            size,
            complete: true,
        }
    }
    fn verification(hours_ago: i64, passed: bool, secs: f64) -> VerificationRecord {
        VerificationRecord {
            key: "p/x".into(),
            verified_at: now() - chrono::Duration::hours(hours_ago),
            passed,
            reasons: if passed { vec![] } else { vec!["bad".into()] },
            restore_secs: secs,
            checks_secs: 0.0,
            total_secs: secs,
            restored_bytes: None,
            tables_checked: 1,
        }
    }

    #[test]
    #[allow(clippy::type_complexity)]
    fn status_verdicts() {
        let h = Duration::from_secs(3600);
        let d = Duration::from_secs(86_400);
        let fail = FailureRecord {
            at: now(),
            error: "S3 down".into(),
            retryable: true,
        };
        let cases: Vec<(
            &str,
            Option<BackupEntry>,
            Option<VerificationRecord>,
            Option<FailureRecord>,
            Verdict,
        )> = vec![
            ("all good", Some(entry(1, 10)), Some(verification(1, true, 5.0)), None, Verdict::Ok),
            ("nothing at all", None, None, None, Verdict::Critical),
            ("never verified", Some(entry(1, 10)), None, None, Verdict::Warning),
            (
                "backup overdue",
                Some(entry(3, 10)),
                Some(verification(1, true, 5.0)),
                None,
                Verdict::Warning,
            ),
            (
                "backup stale",
                Some(entry(4, 10)),
                Some(verification(1, true, 5.0)),
                None,
                Verdict::Critical,
            ),
            (
                "verification failed",
                Some(entry(1, 10)),
                Some(verification(1, false, 5.0)),
                None,
                Verdict::Critical,
            ),
            (
                "verification old",
                Some(entry(1, 10)),
                Some(verification(60, true, 5.0)),
                None,
                Verdict::Warning,
            ),
            (
                "last attempt failed",
                Some(entry(1, 10)),
                Some(verification(1, true, 5.0)),
                Some(fail),
                Verdict::Warning,
            ),
            (
                "empty backup",
                Some(entry(1, 0)),
                Some(verification(1, true, 5.0)),
                None,
                Verdict::Critical,
            ),
        ];
        for (name, b, v, f, want) in cases {
            let (got, problems) = assess_status(now(), b.as_ref(), v.as_ref(), f.as_ref(), h, d);
            assert_eq!(got, want, "{name}: {problems:?}");
            assert_eq!(problems.is_empty(), want == Verdict::Ok, "{name}");
        }
    }

    #[test]
    fn report_figures_from_known_records() {
        let backups = vec![entry(1, 130), entry(25, 100), entry(49, 100), entry(73, 100), entry(24 * 10, 100)];
        let verifications = vec![
            verification(70, true, 10.0),
            verification(50, true, 10.0),
            verification(30, false, 20.0),
            verification(2, true, 20.0),
        ];
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
            price_per_gb_month: 0.02,
        };
        let r = compute(&input);
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
        let text = render(&r);
        assert!(text.contains("75.0% (target 95%: MISSED)"), "{text}");
        assert!(text.contains("retention is not keeping up"), "{text}");
    }
}
