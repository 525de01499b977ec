//! Which backup `--backup` means: `latest`, a key or file name, a stamp, or a time as people type
//! it — RFC 3339 with or without seconds (`2026-11-25T12:00Z`), `2026-11-25 12:00`, a date (its
//! end), or a span ago (`2h`, `3d`, `90m`) — and then the newest backup taken at or before it.

use super::{OperatorError, RestoreFailure};
use crate::records::keys::BackupId;
use chrono::{DateTime, NaiveDate, NaiveDateTime, TimeDelta, Utc};

/// What `--backup` asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Wanted {
    /// The newest backup.
    Latest,
    /// Exactly this backup.
    Exactly(BackupId),
    /// The newest backup taken at or before this time (and how the time was read).
    AtOrBefore(DateTime<Utc>, String),
}

/// A span such as `2h`, `3d`, `90m`, `1w`, `45s` (optionally followed by ` ago`).
fn span(text: &str) -> Option<TimeDelta> {
    let t = text.trim().strip_suffix("ago").unwrap_or(text).trim();
    let digits = t.chars().take_while(char::is_ascii_digit).count();
    let n: i64 = t.get(..digits)?.parse().ok()?;
    let unit = t[digits..].trim();
    let secs = match unit {
        "s" | "sec" | "secs" | "second" | "seconds" => 1,
        "m" | "min" | "mins" | "minute" | "minutes" => 60,
        "h" | "hour" | "hours" => 3600,
        "d" | "day" | "days" => 86_400,
        "w" | "week" | "weeks" => 7 * 86_400,
        _ => return None,
    };
    TimeDelta::try_seconds(n.checked_mul(secs)?)
}

/// A time with an offset (`Z`, `+01:00`) or without one (UTC), with or without seconds, `T` or
/// a space between date and time.
fn time(text: &str) -> Option<DateTime<Utc>> {
    let t = text.trim().replace(' ', "T");
    let (t, zone) = match t.strip_suffix(['Z', 'z']) {
        Some(rest) => (rest.to_string(), "+00:00".to_string()),
        None => match t.rfind(['+', '-']).filter(|at| *at > 10) {
            Some(at) => (t[..at].to_string(), t[at..].to_string()),
            None => (t.clone(), "+00:00".to_string()),
        },
    };
    let zone = if zone.len() == 3 { format!("{zone}:00") } else { zone };
    ["%Y-%m-%dT%H:%M:%S%.f%:z", "%Y-%m-%dT%H:%M%:z"]
        .iter()
        .find_map(|f| DateTime::parse_from_str(&format!("{t}{zone}"), f).ok())
        .map(|d| d.with_timezone(&Utc))
}

/// Reads `--backup`.
///
/// # Errors
/// A value that is none of the forms above, in a sentence listing them.
pub fn wanted(which: &str, now: DateTime<Utc>) -> Result<Wanted, OperatorError> {
    let which = which.trim();
    if which == "latest" {
        return Ok(Wanted::Latest);
    }
    let name = which.rsplit('/').next().unwrap_or(which);
    if let Some(id) = BackupId::parse_file_name(name).or_else(|| BackupId::parse_stamp(name)) {
        return Ok(Wanted::Exactly(id));
    }
    if let Some(ago) = span(which) {
        // Spans beyond the calendar's range (a typo with many digits) are no time at all.
        if let Some(at) = now.checked_sub_signed(ago) {
            return Ok(Wanted::AtOrBefore(at, format!("{which} before now")));
        }
    }
    if let Some(at) = time(which) {
        return Ok(Wanted::AtOrBefore(at, which.to_string()));
    }
    if let Ok(day) = NaiveDate::parse_from_str(which, "%Y-%m-%d") {
        let end = day.and_hms_opt(23, 59, 59).map(|t: NaiveDateTime| t.and_utc());
        if let Some(end) = end {
            return Ok(Wanted::AtOrBefore(end, format!("the end of {which}")));
        }
    }
    Err(OperatorError::Usage(format!(
        "--backup expects latest, a backup's key or file name, a time (2026-11-25T17:00:00Z, 2026-11-25T17:00Z, \"2026-11-25 17:00\", 2026-11-25), or a span ago (2h, 3d); got {which:?}"
    )))
}

/// The position among `complete` (newest first) of the first backup to try, and a sentence
/// saying which one that is and why.
///
/// # Errors
/// No backup at all, a backup that does not exist, or none taken early enough.
pub fn select(complete: &[BackupId], which: &str, now: DateTime<Utc>) -> Result<(usize, String), OperatorError> {
    if complete.is_empty() {
        return Err(RestoreFailure::NoBackup.into());
    }
    match wanted(which, now)? {
        Wanted::Latest => Ok((0, format!("{}: the newest backup", complete[0].file_name()))),
        Wanted::Exactly(id) => complete
            .iter()
            .position(|c| *c == id)
            .map(|p| (p, format!("{}: as named", id.file_name())))
            .ok_or_else(|| OperatorError::Usage(format!("backup {which} does not exist or is incomplete"))),
        Wanted::AtOrBefore(limit, read) => {
            let shown = limit.format("%Y-%m-%d %H:%M:%S UTC");
            let p = complete
                .iter()
                .position(|c| c.0 <= limit)
                .ok_or_else(|| OperatorError::Usage(format!("no backup was taken at or before {shown} ({read})")))?;
            Ok((
                p,
                format!("{}: the newest backup taken at or before {shown} ({read})", complete[p].file_name()),
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn backups_are_chosen_from_names_times_and_spans_as_people_type_them() {
        let id = |d: u32, h: u32| BackupId::at(Utc.with_ymd_and_hms(2026, 11, d, h, 0, 0).unwrap());
        let complete = vec![id(25, 12), id(25, 6), id(24, 12)];
        let now = Utc.with_ymd_and_hms(2026, 11, 25, 14, 0, 0).unwrap();
        let cases: Vec<(&str, Option<usize>)> = vec![
            ("latest", Some(0)),
            ("backup_2026-11-25T06-00-00Z.sql.gz", Some(1)),
            ("backup_2026-11-25T06-00-00Z.sql.gz.age", Some(1)),
            ("prod/main/backup_2026-11-24T12-00-00Z.sql.gz", Some(2)),
            ("backup_2026-11-23T12-00-00Z.sql.gz", None),
            ("2026-11-25T06-00-00Z", Some(1)),
            ("2026-11-25T07:00:00Z", Some(1)),
            ("2026-11-25T12:00Z", Some(0)),
            ("2026-11-25T11:59Z", Some(1)),
            ("2026-11-25T13:00+01:00", Some(0)),
            ("2026-11-25T12:30:00.5+01", Some(1)),
            ("2026-11-25 12:00", Some(0)),
            ("2026-11-25 11:00", Some(1)),
            ("2026-11-25T06:00", Some(1)),
            ("2026-11-24", Some(2)),
            ("2026-11-01", None),
            ("2h", Some(0)),
            ("3h", Some(1)),
            ("1d", Some(2)),
            ("90 min ago", Some(0)),
            ("3w", None),
            ("yesterday", None),
            ("12", None),
            ("99999999999d", None),
            ("14000000w", None),
            ("99999999999999999999h", None),
        ];
        for (which, want) in cases {
            assert_eq!(select(&complete, which, now).ok().map(|(p, _)| p), want, "{which}");
        }
        let (_, why) = select(&complete, "2026-11-25T11:59Z", now).unwrap();
        assert_eq!(
            why,
            "backup_2026-11-25T06-00-00Z.sql.gz: the newest backup taken at or before 2026-11-25 11:59:00 UTC (2026-11-25T11:59Z)"
        );
        assert!(matches!(
            select(&[], "latest", now),
            Err(OperatorError::Restore(RestoreFailure::NoBackup))
        ));
    }
}
