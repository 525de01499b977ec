//! `pgvigil status` and the health of a prefix: a Nagios-style verdict from the newest backup, the
//! newest verification and the last failed attempt. A pure function, tested with known records.

use crate::records::catalog::BackupEntry;
use crate::records::history::{FailureRecord, VerificationRecord};
use chrono::{DateTime, Utc};
use serde::Serialize;
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

/// `1.5 MB` (powers of 1000, as storage bills count).
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

/// `3d 4h`, `2h 5m`, `45s` (used inside the problem sentences).
pub fn human_secs(s: i64) -> String {
    let s = s.max(0);
    match s {
        0..=119 => format!("{s}s"),
        120..=7199 => format!("{}m", s / 60),
        7200..=172_799 => format!("{}h {}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d {}h", s / 86_400, s % 86_400 / 3600),
    }
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::{entry, now, verification};
    use super::*;

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
}
