//! Retention: which backups may be deleted. A pure function of (backups, policy, now).
//!
//! Rules, in order: only pgvigil-named backups are ever candidates (callers pass only parsed
//! names); the newest *complete* backup is always kept; the newest `min_keep` complete backups
//! are kept whatever their age; anything else older than `retention_days` is deleted. A backup
//! stamped in the future (clock skew) is never old, so never deleted.

use crate::records::keys::BackupId;
use chrono::{DateTime, Duration, Utc};

/// What retention may delete.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetentionPolicy {
    /// Delete backups older than this many days.
    pub retention_days: u64,
    /// Never keep fewer complete backups than this.
    pub min_keep: usize,
}

/// A backup as retention sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Candidate {
    /// Its identity (timestamp).
    pub id: BackupId,
    /// True when its manifest exists (the backup completed).
    pub complete: bool,
}

/// The backups to delete, oldest first.
pub fn plan(backups: &[Candidate], policy: RetentionPolicy, now: DateTime<Utc>) -> Vec<BackupId> {
    let mut sorted: Vec<Candidate> = backups.to_vec();
    sorted.sort_by_key(|c| std::cmp::Reverse(c.id));
    sorted.dedup_by_key(|c| c.id);
    let cutoff = now - Duration::days(policy.retention_days.min(100_000) as i64);
    let mut complete_kept = 0usize;
    let mut delete = Vec::new();
    for c in sorted {
        if c.complete && complete_kept < policy.min_keep.max(1) {
            complete_kept += 1;
            continue;
        }
        if c.id.0 < cutoff {
            delete.push(c.id);
        } else if c.complete {
            complete_kept += 1;
        }
    }
    delete.reverse();
    delete
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn day(d: i64) -> BackupId {
        BackupId::at(Utc.with_ymd_and_hms(2026, 11, 1, 0, 0, 0).unwrap() + Duration::days(d))
    }
    fn c(d: i64) -> Candidate {
        Candidate {
            id: day(d),
            complete: true,
        }
    }
    fn partial(d: i64) -> Candidate {
        Candidate {
            id: day(d),
            complete: false,
        }
    }

    #[test]
    fn table() {
        let p = |days, keep| RetentionPolicy {
            retention_days: days,
            min_keep: keep,
        };
        let now = day(20).0;
        #[allow(clippy::type_complexity)]
        let cases: Vec<(&str, Vec<Candidate>, RetentionPolicy, Vec<i64>)> = vec![
            ("nothing to do", vec![], p(7, 3), vec![]),
            ("deletes only the old ones", (0..=20).map(c).collect(), p(7, 3), (0..13).collect()),
            ("exactly at the cutoff is kept", vec![c(13), c(14), c(20)], p(7, 1), vec![]),
            ("min_keep protects old backups", vec![c(1), c(2), c(3), c(4)], p(7, 3), vec![1]),
            ("newest complete kept even if ancient", vec![c(1)], p(7, 1), vec![]),
            (
                "newest complete kept when newer partial exists",
                vec![c(1), partial(2)],
                p(7, 1),
                vec![2],
            ),
            (
                "partials do not count toward min_keep",
                vec![c(1), c(2), partial(3), partial(19)],
                p(7, 2),
                vec![3],
            ),
            (
                "future backups (clock skew) are kept and count",
                vec![c(1), c(30), c(31)],
                p(7, 2),
                vec![1],
            ),
            ("clock far ahead still keeps min_keep", vec![c(1), c(2), c(3)], p(7, 2), vec![1]),
            ("duplicates are harmless", vec![c(1), c(1), c(19)], p(7, 1), vec![1]),
        ];
        for (name, backups, policy, want) in cases {
            let got = plan(&backups, policy, now);
            let want: Vec<BackupId> = want.into_iter().map(day).collect();
            assert_eq!(got, want, "{name}");
        }
    }

    #[test]
    fn clock_running_backwards_deletes_nothing_recent() {
        let backups: Vec<Candidate> = (0..10).map(c).collect();
        let got = plan(
            &backups,
            RetentionPolicy {
                retention_days: 7,
                min_keep: 1,
            },
            day(-100).0,
        );
        assert!(got.is_empty());
    }
}
