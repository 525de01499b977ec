//! When a job is next due, derived from what is in storage rather than from process memory, so
//! that restarts neither double nor skip runs.

use chrono::{DateTime, Utc};
use std::time::Duration;

/// Time until a job is due: `interval` after the newest success, zero when overdue or never run.
pub fn due_in(newest: Option<DateTime<Utc>>, interval: Duration, now: DateTime<Utc>) -> Duration {
    match newest {
        None => Duration::ZERO,
        Some(t) => {
            let due = t + chrono::Duration::from_std(interval).unwrap_or(chrono::Duration::days(1));
            (due - now).to_std().unwrap_or(Duration::ZERO).min(interval)
        }
    }
}

/// How old the newest success is when that is more than twice the interval (a stale backup or
/// verification); `None` while it is fresh, or when there is none yet (failures say so then).
pub fn stale_age(newest: Option<DateTime<Utc>>, interval: Duration, now: DateTime<Utc>) -> Option<Duration> {
    let age = (now - newest?).to_std().unwrap_or_default();
    (age > interval * 2).then_some(age)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn schedule_survives_restarts() {
        let now = Utc.with_ymd_and_hms(2026, 11, 25, 12, 0, 0).unwrap();
        let h = Duration::from_secs(3600);
        let cases = [
            (None, 0),
            (Some(now - chrono::Duration::minutes(20)), 2400),
            (Some(now - chrono::Duration::hours(5)), 0),
            (Some(now), 3600),
            (Some(now + chrono::Duration::hours(3)), 3600),
        ];
        for (newest, want) in cases {
            assert_eq!(due_in(newest, h, now).as_secs(), want, "{newest:?}");
        }
    }

    #[test]
    fn stale_means_older_than_twice_the_interval() {
        let now = Utc.with_ymd_and_hms(2026, 11, 25, 12, 0, 0).unwrap();
        let h = Duration::from_secs(3600);
        let cases = [
            (None, None),
            (Some(now), None),
            (Some(now - chrono::Duration::minutes(119)), None),
            (Some(now - chrono::Duration::minutes(120)), None),
            (Some(now - chrono::Duration::minutes(121)), Some(121 * 60)),
            (Some(now - chrono::Duration::days(4)), Some(4 * 86_400)),
            // A clock that went backwards is not staleness.
            (Some(now + chrono::Duration::hours(3)), None),
        ];
        for (newest, want) in cases {
            assert_eq!(stale_age(newest, h, now).map(|d| d.as_secs()), want, "{newest:?}");
        }
    }
}
