//! Retention: which backups may be deleted. A pure function of (backups and their verdicts,
//! policy, now); see [`plan`] for the rules. Evidence is never pruned away: the newest backup that
//! passed verification survives, and backups that failed verification do not count toward
//! `min_keep`.

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

/// What verification said about a backup, as retention needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verified {
    /// Its newest verification passed.
    Passed,
    /// Its newest verification failed.
    Failed,
    /// Never verified.
    Not,
}

/// A backup as retention sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Candidate {
    /// Its identity (timestamp).
    pub id: BackupId,
    /// True when its manifest exists (the backup completed).
    pub complete: bool,
    /// What verification said.
    pub verified: Verified,
    /// Held until acknowledged (the last backup before a table anomaly).
    pub held: bool,
}

/// Why a backup older than the retention period is kept beyond what the bare policy says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeptBecause {
    /// It is the newest backup that passed verification: the last proven one is never deleted.
    NewestVerified,
    /// It is one of the newest `min_keep` backups, counted without those that failed
    /// verification.
    MinKeepWithoutFailed,
    /// It is held: the last backup before a table lost most of its rows, kept until someone runs
    /// `pgvigil ack`.
    Held,
    /// Its object lock (`S3_OBJECT_LOCK_DAYS`) lasts until then: the store would refuse the
    /// delete, or hide the object behind a delete marker.
    Locked(DateTime<Utc>),
}

impl KeptBecause {
    /// In plain words.
    pub fn describe(self) -> String {
        match self {
            KeptBecause::NewestVerified => "the newest backup that passed verification".into(),
            KeptBecause::MinKeepWithoutFailed => "within BACKUP_MIN_KEEP, which does not count backups that failed verification".into(),
            KeptBecause::Held => "held after a table anomaly until acknowledged (pgvigil ack)".into(),
            KeptBecause::Locked(until) => format!("its object lock lasts until {}", until.format("%Y-%m-%d %H:%M UTC")),
        }
    }
}

/// What retention does.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// Backups to delete, oldest first.
    pub delete: Vec<BackupId>,
    /// Backups kept although the bare policy (age and `min_keep` alone) would delete them.
    pub kept: Vec<(BackupId, KeptBecause)>,
}

/// The bare policy: age and `min_keep`, counting `counts` toward `min_keep`, never the newest
/// complete backup nor `protect`.
fn delete_list(
    sorted: &[Candidate],
    policy: RetentionPolicy,
    cutoff: DateTime<Utc>,
    counts: impl Fn(&Candidate) -> bool,
    protect: Option<BackupId>,
) -> Vec<BackupId> {
    let mut kept_for_min = 0usize;
    let mut newest_complete_seen = false;
    let mut delete = Vec::new();
    for c in sorted {
        let newest_complete = c.complete && !newest_complete_seen;
        newest_complete_seen |= c.complete;
        if c.complete && counts(c) && kept_for_min < policy.min_keep.max(1) {
            kept_for_min += 1;
            continue;
        }
        if newest_complete || Some(c.id) == protect {
            continue;
        }
        if c.id.0 < cutoff {
            delete.push(c.id);
        } else if c.complete && counts(c) {
            kept_for_min += 1;
        }
    }
    delete.reverse();
    delete
}

/// The retention plan. Rules, in order: only pgvigil-named backups are candidates (callers pass
/// only parsed names); the newest complete backup is kept; the newest backup that passed
/// verification is kept; the newest `min_keep` complete backups that did not fail verification
/// are kept whatever their age; anything else older than `retention_days` is deleted. A backup
/// stamped in the future (clock skew) is never old, so never deleted.
pub fn plan(backups: &[Candidate], policy: RetentionPolicy, now: DateTime<Utc>) -> Plan {
    let mut sorted: Vec<Candidate> = backups.to_vec();
    sorted.sort_by_key(|c| std::cmp::Reverse(c.id));
    sorted.dedup_by_key(|c| c.id);
    let cutoff = now - Duration::days(policy.retention_days.min(100_000) as i64);
    let newest_verified = sorted.iter().find(|c| c.complete && c.verified == Verified::Passed).map(|c| c.id);
    let bare = delete_list(&sorted, policy, cutoff, |_| true, None);
    // Never more than the bare policy deletes: evidence only ever keeps more.
    let held: Vec<BackupId> = sorted.iter().filter(|c| c.held).map(|c| c.id).collect();
    let delete: Vec<BackupId> = delete_list(&sorted, policy, cutoff, |c| c.verified != Verified::Failed, newest_verified)
        .into_iter()
        .filter(|id| bare.contains(id) && !held.contains(id))
        .collect();
    let kept = bare
        .iter()
        .filter(|id| !delete.contains(id))
        .map(|id| {
            let why = if held.contains(id) {
                KeptBecause::Held
            } else if Some(*id) == newest_verified {
                KeptBecause::NewestVerified
            } else {
                KeptBecause::MinKeepWithoutFailed
            };
            (*id, why)
        })
        .collect();
    Plan { delete, kept }
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
            verified: Verified::Not,
            held: false,
        }
    }
    fn passed(d: i64) -> Candidate {
        Candidate {
            verified: Verified::Passed,
            ..c(d)
        }
    }
    fn failed(d: i64) -> Candidate {
        Candidate {
            verified: Verified::Failed,
            ..c(d)
        }
    }
    fn partial(d: i64) -> Candidate {
        Candidate { complete: false, ..c(d) }
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
            (
                "the newest verified backup survives when every later one failed",
                vec![passed(1), passed(2), failed(15), failed(16), failed(17), failed(18)],
                p(7, 1),
                vec![1],
            ),
            (
                "failed verifications do not count toward min_keep",
                vec![c(1), c(2), c(3), failed(15), failed(16)],
                p(7, 2),
                vec![1],
            ),
            (
                "never fewer than min_keep, failed or not",
                vec![failed(1), failed(2), failed(3), failed(4)],
                p(7, 3),
                vec![1],
            ),
            (
                "a failed newest backup is still the newest complete one",
                vec![c(1), c(2), failed(19)],
                p(7, 1),
                vec![1],
            ),
            (
                "a passed backup inside the window changes nothing",
                vec![c(1), c(2), passed(19)],
                p(7, 1),
                vec![1, 2],
            ),
        ];
        for (name, backups, policy, want) in cases {
            let got = plan(&backups, policy, now).delete;
            let want: Vec<BackupId> = want.into_iter().map(day).collect();
            assert_eq!(got, want, "{name}");
        }
    }

    #[test]
    fn what_is_kept_beyond_the_bare_policy_says_why() {
        let policy = RetentionPolicy {
            retention_days: 7,
            min_keep: 2,
        };
        let backups = vec![c(1), passed(2), c(3), failed(15), failed(16)];
        let got = plan(&backups, policy, day(20).0);
        assert_eq!(got.delete, vec![day(1)]);
        assert_eq!(
            got.kept,
            vec![(day(2), KeptBecause::NewestVerified), (day(3), KeptBecause::MinKeepWithoutFailed)]
        );
    }

    #[test]
    fn a_held_backup_is_kept_whatever_its_age() {
        let policy = RetentionPolicy {
            retention_days: 7,
            min_keep: 1,
        };
        let now = day(40).0;
        let held = Candidate { held: true, ..c(1) };
        let p = plan(&[held, c(2), c(39)], policy, now);
        assert_eq!(p.delete, vec![day(2)]);
        assert_eq!(p.kept, vec![(day(1), KeptBecause::Held)]);
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
        assert!(got.delete.is_empty());
    }
}
