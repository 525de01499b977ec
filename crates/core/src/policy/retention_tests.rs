//! Table tests of the retention plan: age, min_keep, evidence, holds, clock skew, calendar rules.

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
    let p = RetentionPolicy::simple;
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
    let policy = RetentionPolicy::simple(7, 2);
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
    let policy = RetentionPolicy::simple(7, 1);
    let now = day(40).0;
    let held = Candidate { held: true, ..c(1) };
    let p = plan(&[held, c(2), c(39)], policy, now);
    assert_eq!(p.delete, vec![day(2)]);
    assert_eq!(p.kept, vec![(day(1), KeptBecause::Held)]);
}

#[test]
fn clock_running_backwards_deletes_nothing_recent() {
    let backups: Vec<Candidate> = (0..10).map(c).collect();
    let got = plan(&backups, RetentionPolicy::simple(7, 1), day(-100).0);
    assert!(got.delete.is_empty());
}

#[test]
fn calendar_rules_keep_old_backups_and_every_kept_backup_lists_its_rules() {
    let mut policy = RetentionPolicy::simple(7, 1);
    policy.calendar.monthly = 3;
    // A backup every day at midnight from 1 November 2026 (day 0) to 8 February 2027 (day 99).
    let backups: Vec<Candidate> = (0..100).map(c).collect();
    let now = day(99).0 + Duration::hours(1);
    let got = plan(&backups, policy, now);
    // Kept: the last 7 days (2 February, day 93, onwards), and the last backup of January
    // (day 91) and of December (day 60); February's is the newest backup.
    let mut want_deleted: Vec<BackupId> = (0..93).filter(|d| *d != 60 && *d != 91).map(day).collect();
    want_deleted.sort();
    assert_eq!(got.delete, want_deleted);
    let monthly = |id| {
        got.rules_of(id)
            .iter()
            .any(|r| matches!(r, KeptBecause::Calendar(p) if p.contains(crate::policy::calendar::Period::Monthly)))
    };
    assert_eq!(got.kept.iter().map(|(id, _)| *id).collect::<Vec<_>>(), vec![day(60), day(91)]);
    assert!(got.kept.iter().all(|(_, why)| matches!(why, KeptBecause::Calendar(_))));
    assert!(monthly(day(60)) && monthly(day(91)) && monthly(day(99)));
    assert_eq!(
        got.rules_of(day(99)),
        &[
            KeptBecause::Window,
            KeptBecause::Newest,
            KeptBecause::MinKeep,
            got.rules_of(day(99))[3]
        ]
    );
    assert!(got.rules_of(day(10)).is_empty());
    // Without the calendar rule the same history keeps only the window.
    let bare = plan(&backups, RetentionPolicy::simple(7, 1), now);
    assert_eq!(bare.delete.len(), 93);
    assert!(bare.kept.is_empty());
}

#[test]
fn a_lock_found_later_is_one_more_rule() {
    let mut got = plan(&[c(1), c(19)], RetentionPolicy::simple(7, 1), day(20).0);
    assert_eq!(got.delete, vec![day(1)]);
    let until = day(30).0;
    got.keep(day(1), KeptBecause::Locked(until));
    assert!(got.delete.is_empty());
    assert_eq!(got.kept, vec![(day(1), KeptBecause::Locked(until))]);
    assert_eq!(got.rules_of(day(1)), &[KeptBecause::Locked(until)]);
    assert_eq!(got.rules.first().map(|(id, _)| *id), Some(day(19)), "newest first");
}
