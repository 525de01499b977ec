//! Table tests of calendar retention over synthetic histories: gaps, ISO weeks across a year's
//! end, leap years, DST changes, failed verifications, clock skew, and three years of hourly
//! backups.

use super::*;
use chrono::{Duration, TimeZone};

fn at(y: i32, m: u32, d: u32, h: u32, mi: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(y, m, d, h, mi, 0).unwrap()
}
fn c(t: DateTime<Utc>) -> Candidate {
    Candidate {
        id: BackupId::at(t),
        complete: true,
        verified: Verified::Not,
        held: false,
    }
}
fn with(t: DateTime<Utc>, verified: Verified) -> Candidate {
    Candidate { verified, ..c(t) }
}
/// Backups every `step` from `from` (inclusive) to `to` (exclusive).
fn every(from: DateTime<Utc>, to: DateTime<Utc>, step: Duration) -> Vec<Candidate> {
    let mut out = Vec::new();
    let mut t = from;
    while t < to {
        out.push(c(t));
        t += step;
    }
    out
}
fn rule(kind: Period, n: u32, zone: Tz) -> Calendar {
    let mut cal = Calendar {
        zone,
        ..Calendar::default()
    };
    cal.set(kind, n);
    cal
}
fn picks(backups: &[Candidate], cal: &Calendar, now: DateTime<Utc>) -> Vec<DateTime<Utc>> {
    let mut got: Vec<DateTime<Utc>> = keeps(backups, cal, now).into_keys().map(|id| id.0).collect();
    got.sort_by_key(|t| std::cmp::Reverse(*t));
    got
}

#[test]
fn table() {
    let berlin: Tz = "Europe/Berlin".parse().unwrap();
    let utc = Tz::UTC;
    let hourly_30_days = every(at(2026, 11, 1, 0, 0), at(2026, 12, 1, 0, 0), Duration::hours(1));
    let gaps: Vec<Candidate> = [1, 5, 9, 10]
        .iter()
        .flat_map(|d| [c(at(2026, 11, *d, 3, 0)), c(at(2026, 11, *d, 15, 0))])
        .collect();
    let across_new_year = every(at(2026, 12, 21, 12, 0), at(2027, 1, 11, 0, 0), Duration::days(1));
    let leap = every(at(2027, 12, 1, 12, 0), at(2028, 4, 1, 0, 0), Duration::days(1));
    let three_years = every(at(2024, 1, 1, 12, 0), at(2027, 1, 1, 0, 0), Duration::days(1));
    // Every 20 minutes around the two DST changes of 2026 in Berlin (29 March, 25 October).
    let spring = every(at(2026, 3, 28, 0, 0), at(2026, 3, 30, 12, 0), Duration::minutes(20));
    let autumn = every(at(2026, 10, 24, 0, 0), at(2026, 10, 26, 12, 0), Duration::minutes(20));
    let now = at(2030, 1, 1, 0, 0);
    #[allow(clippy::type_complexity)]
    let cases: Vec<(&str, Vec<Candidate>, Calendar, DateTime<Utc>, Vec<DateTime<Utc>>)> = vec![
        ("no rule keeps nothing", hourly_30_days.clone(), Calendar::default(), now, vec![]),
        (
            "7 daily: the last backup of each of the last 7 days",
            hourly_30_days.clone(),
            rule(Period::Daily, 7, utc),
            now,
            (24..=30).rev().map(|d| at(2026, 11, d, 23, 0)).collect(),
        ),
        (
            "3 hourly: the last three hours",
            hourly_30_days.clone(),
            rule(Period::Hourly, 3, utc),
            now,
            vec![at(2026, 11, 30, 23, 0), at(2026, 11, 30, 22, 0), at(2026, 11, 30, 21, 0)],
        ),
        (
            "a gap uses up no slot: the three most recent days that have backups",
            gaps.clone(),
            rule(Period::Daily, 3, utc),
            now,
            vec![at(2026, 11, 10, 15, 0), at(2026, 11, 9, 15, 0), at(2026, 11, 5, 15, 0)],
        ),
        (
            "more slots than periods keeps one per period",
            gaps.clone(),
            rule(Period::Daily, 10, utc),
            now,
            [10, 9, 5, 1].iter().map(|d| at(2026, 11, *d, 15, 0)).collect(),
        ),
        (
            "ISO weeks across the year's end (week 53 of 2026 ends on 3 January)",
            across_new_year,
            rule(Period::Weekly, 3, utc),
            now,
            vec![at(2027, 1, 10, 12, 0), at(2027, 1, 3, 12, 0), at(2026, 12, 27, 12, 0)],
        ),
        (
            "months of a leap year: 29 February is February's last day",
            leap.clone(),
            rule(Period::Monthly, 4, utc),
            now,
            vec![
                at(2028, 3, 31, 12, 0),
                at(2028, 2, 29, 12, 0),
                at(2028, 1, 31, 12, 0),
                at(2027, 12, 31, 12, 0),
            ],
        ),
        (
            "yearly: the last backup of each year",
            three_years,
            rule(Period::Yearly, 2, utc),
            now,
            vec![at(2026, 12, 31, 12, 0), at(2025, 12, 31, 12, 0)],
        ),
        (
            "in Berlin, 29 March has 23 hours: it starts at 23:00 UTC the day before and ends at 22:00 UTC",
            spring.clone(),
            rule(Period::Daily, 3, berlin),
            at(2026, 3, 29, 23, 50),
            // 23:40 UTC is already 30 March (01:40 CEST); 21:40 UTC is 23:40 CEST; 22:40 UTC on
            // the 28th is 23:40 CET.
            vec![at(2026, 3, 29, 23, 40), at(2026, 3, 29, 21, 40), at(2026, 3, 28, 22, 40)],
        ),
        (
            "the same history in UTC cuts the days at midnight UTC",
            spring,
            rule(Period::Daily, 3, utc),
            at(2026, 3, 29, 23, 50),
            vec![at(2026, 3, 29, 23, 40), at(2026, 3, 28, 23, 40)],
        ),
        (
            "in Berlin, 25 October has 25 hours: it ends at 23:00 UTC",
            autumn.clone(),
            rule(Period::Daily, 2, berlin),
            at(2026, 10, 25, 22, 50),
            // 22:40 UTC is 23:40 CET; on the 24th, 21:40 UTC is 23:40 CEST.
            vec![at(2026, 10, 25, 22, 40), at(2026, 10, 24, 21, 40)],
        ),
        (
            "the hour repeated when clocks go back is one period",
            autumn,
            rule(Period::Hourly, 3, berlin),
            at(2026, 10, 25, 2, 30),
            // 02:20 UTC is 03:20 CET; 01:40 UTC (02:40 CET) and 00:40 UTC (02:40 CEST) share 02:00-03:00.
            vec![at(2026, 10, 25, 2, 20), at(2026, 10, 25, 1, 40), at(2026, 10, 24, 23, 40)],
        ),
        (
            "a backup after now (clock skew) is never a pick",
            vec![c(at(2026, 11, 1, 10, 0)), c(at(2026, 11, 1, 20, 0)), c(at(2026, 11, 2, 9, 0))],
            rule(Period::Daily, 2, utc),
            at(2026, 11, 1, 12, 0),
            vec![at(2026, 11, 1, 10, 0)],
        ),
        (
            "incomplete backups are never a pick",
            vec![
                c(at(2026, 11, 1, 10, 0)),
                Candidate {
                    complete: false,
                    ..c(at(2026, 11, 1, 20, 0))
                },
            ],
            rule(Period::Daily, 1, utc),
            now,
            vec![at(2026, 11, 1, 10, 0)],
        ),
        (
            "a period's pick is its newest passed backup, not a newer failed one",
            vec![
                with(at(2026, 11, 1, 1, 0), Verified::Passed),
                with(at(2026, 11, 1, 2, 0), Verified::Passed),
                with(at(2026, 11, 1, 3, 0), Verified::Failed),
                c(at(2026, 11, 1, 4, 0)),
            ],
            rule(Period::Daily, 1, utc),
            now,
            vec![at(2026, 11, 1, 2, 0)],
        ),
        (
            "without a passed one, the newest never verified, not a newer failed one",
            vec![
                c(at(2026, 11, 1, 1, 0)),
                c(at(2026, 11, 1, 2, 0)),
                with(at(2026, 11, 1, 3, 0), Verified::Failed),
            ],
            rule(Period::Daily, 1, utc),
            now,
            vec![at(2026, 11, 1, 2, 0)],
        ),
        (
            "when every backup of a period failed, its newest still stands for it",
            vec![
                with(at(2026, 11, 1, 1, 0), Verified::Failed),
                with(at(2026, 11, 1, 2, 0), Verified::Failed),
                c(at(2026, 11, 2, 1, 0)),
            ],
            rule(Period::Daily, 2, utc),
            now,
            vec![at(2026, 11, 2, 1, 0), at(2026, 11, 1, 2, 0)],
        ),
        (
            "rules overlap: a backup can be the pick of several",
            leap,
            Calendar {
                daily: 2,
                monthly: 2,
                ..Calendar::default()
            },
            now,
            vec![at(2028, 3, 31, 12, 0), at(2028, 3, 30, 12, 0), at(2028, 2, 29, 12, 0)],
        ),
    ];
    for (name, backups, cal, now, want) in cases {
        assert_eq!(picks(&backups, &cal, now), want, "{name}");
    }
}

#[test]
fn three_years_of_hourly_backups_keep_one_per_period_and_the_newest_periods() {
    let from = at(2024, 1, 1, 0, 30);
    let backups = every(from, at(2027, 1, 1, 0, 0), Duration::hours(1));
    let cal = Calendar {
        hourly: 24,
        daily: 7,
        weekly: 4,
        monthly: 12,
        yearly: 3,
        zone: "America/New_York".parse().unwrap(),
    };
    let kept = keeps(&backups, &cal, at(2027, 6, 1, 0, 0));
    for kind in Period::ALL {
        let chosen: Vec<DateTime<Utc>> = kept.iter().filter(|(_, p)| p.contains(kind)).map(|(id, _)| id.0).collect();
        assert_eq!(chosen.len(), cal.count(kind) as usize, "{kind:?}");
        let mut slots: Vec<i64> = chosen.iter().map(|t| kind.slot(*t, cal.zone)).collect();
        slots.dedup();
        assert_eq!(slots.len(), chosen.len(), "{kind:?}: one pick per period");
        // Each pick is its period's newest backup, and no more recent period is skipped.
        for t in &chosen {
            let later_in_period = backups
                .iter()
                .any(|b| b.id.0 > *t && kind.slot(b.id.0, cal.zone) == kind.slot(*t, cal.zone));
            assert!(!later_in_period, "{kind:?}: {t} is not its period's newest");
        }
        let oldest = chosen.iter().min().copied().unwrap_or(from);
        let periods_after: std::collections::BTreeSet<i64> = backups
            .iter()
            .filter(|b| b.id.0 >= oldest)
            .map(|b| kind.slot(b.id.0, cal.zone))
            .collect();
        assert_eq!(periods_after.len(), chosen.len(), "{kind:?}: a recent period was skipped");
    }
    // The newest backup is the pick of every rule.
    assert!(kept.contains_key(&BackupId::at(at(2026, 12, 31, 23, 30))));
    assert!(kept.len() <= 24 + 7 + 4 + 12 + 3);
}

#[test]
fn the_rules_read_as_words() {
    assert_eq!(Calendar::default().describe(), None);
    let cal = Calendar {
        daily: 7,
        weekly: 4,
        monthly: 12,
        ..Calendar::default()
    };
    assert_eq!(cal.describe().as_deref(), Some("7 daily, 4 weekly and 12 monthly (periods in UTC)"));
    let one = Calendar {
        yearly: 1,
        ..Calendar::default()
    };
    assert_eq!(one.describe().as_deref(), Some("1 yearly (periods in UTC)"));
    let mut p = Periods::default();
    p.0 |= Period::Daily.bit() | Period::Monthly.bit();
    assert_eq!(
        p.describe(),
        "the backup kept for its day (BACKUP_KEEP_DAILY) and for its month (BACKUP_KEEP_MONTHLY)"
    );
}

#[test]
fn dates_at_the_edge_of_the_calendar_count_without_a_panic() {
    // A hostile record or name can carry any date chrono holds; in a zone behind UTC the earliest
    // one has no local date.
    let new_york: Tz = "America/New_York".parse().unwrap();
    let earliest = DateTime::<Utc>::MIN_UTC;
    let latest = DateTime::<Utc>::MAX_UTC;
    let now = at(2026, 12, 1, 0, 0);
    let backups = vec![c(earliest), c(at(2026, 11, 30, 12, 0)), c(latest)];
    for kind in [Period::Hourly, Period::Daily, Period::Weekly, Period::Monthly, Period::Yearly] {
        for zone in [new_york, "Asia/Tokyo".parse().unwrap(), Tz::UTC] {
            let got = picks(&backups, &rule(kind, 36_500, zone), now);
            assert!(got.contains(&at(2026, 11, 30, 12, 0)), "{kind:?} {zone}: {got:?}");
        }
    }
}
