//! Calendar retention: keep the newest backup of each of the last N hours, days, weeks, months and
//! years (`BACKUP_KEEP_HOURLY` … `BACKUP_KEEP_YEARLY`), so a problem found weeks later still has a
//! backup from before it. A pure function of (backups, rules, now), used by [`super::retention`].
//!
//! Rules, for each kind of period with a count N:
//! * periods are the calendar's, in `BACKUP_TIMEZONE` (UTC unless set): a day runs from local
//!   midnight to local midnight whatever its length (23 or 25 hours across a DST change), weeks are
//!   ISO weeks (Monday to Sunday), an hour repeated when clocks go back is one period;
//! * the N most recent periods **that have a backup** count, so a gap (a week without backups)
//!   does not use up a slot; a backup stamped after `now` (clock skew) is never a period's pick;
//! * in each period the pick is the newest backup that passed verification, else the newest one
//!   never verified, else the newest one (all of them failed); only complete backups count.

use super::retention::{Candidate, Verified};
use crate::records::keys::BackupId;
use crate::records::policy::KeepRecord;
use chrono::{DateTime, Datelike, Offset, TimeZone, Timelike, Utc};
use chrono_tz::Tz;
use std::collections::BTreeMap;

/// A kind of calendar period.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Period {
    /// An hour of the local clock.
    Hourly,
    /// A local calendar day.
    Daily,
    /// An ISO week, Monday to Sunday.
    Weekly,
    /// A calendar month.
    Monthly,
    /// A calendar year.
    Yearly,
}

impl Period {
    /// Every kind, shortest first.
    pub const ALL: [Period; 5] = [Period::Hourly, Period::Daily, Period::Weekly, Period::Monthly, Period::Yearly];

    /// The variable that sets its count.
    pub fn variable(self) -> &'static str {
        match self {
            Period::Hourly => "BACKUP_KEEP_HOURLY",
            Period::Daily => "BACKUP_KEEP_DAILY",
            Period::Weekly => "BACKUP_KEEP_WEEKLY",
            Period::Monthly => "BACKUP_KEEP_MONTHLY",
            Period::Yearly => "BACKUP_KEEP_YEARLY",
        }
    }

    /// The period in words ("day").
    pub fn noun(self) -> &'static str {
        match self {
            Period::Hourly => "hour",
            Period::Daily => "day",
            Period::Weekly => "week",
            Period::Monthly => "month",
            Period::Yearly => "year",
        }
    }

    /// The rule in words ("daily").
    pub fn adjective(self) -> &'static str {
        match self {
            Period::Hourly => "hourly",
            Period::Daily => "daily",
            Period::Weekly => "weekly",
            Period::Monthly => "monthly",
            Period::Yearly => "yearly",
        }
    }

    fn bit(self) -> u8 {
        1 << (self as u8)
    }

    /// A number naming the period that holds `t` on the local calendar of `zone`; equal numbers,
    /// same period.
    fn slot(self, t: DateTime<Utc>, zone: Tz) -> i64 {
        // (Not `naive_local()`, which panics where the offset takes a date out of chrono's range.)
        let offset = zone.offset_from_utc_datetime(&t.naive_utc()).fix();
        let local = t.naive_utc().checked_add_offset(offset).unwrap_or_else(|| t.naive_utc());
        let day = i64::from(local.date().num_days_from_ce());
        match self {
            Period::Hourly => day * 24 + i64::from(local.hour()),
            Period::Daily => day,
            Period::Weekly => {
                let w = local.date().iso_week();
                i64::from(w.year()) * 100 + i64::from(w.week())
            }
            Period::Monthly => i64::from(local.year()) * 12 + i64::from(local.month0()),
            Period::Yearly => i64::from(local.year()),
        }
    }
}

/// How many periods of each kind to keep, and in which time zone periods are counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Calendar {
    /// `BACKUP_KEEP_HOURLY` (0: off).
    pub hourly: u32,
    /// `BACKUP_KEEP_DAILY` (0: off).
    pub daily: u32,
    /// `BACKUP_KEEP_WEEKLY` (0: off).
    pub weekly: u32,
    /// `BACKUP_KEEP_MONTHLY` (0: off).
    pub monthly: u32,
    /// `BACKUP_KEEP_YEARLY` (0: off).
    pub yearly: u32,
    /// `BACKUP_TIMEZONE` (UTC unless set).
    pub zone: Tz,
}

impl Default for Calendar {
    fn default() -> Self {
        Calendar {
            hourly: 0,
            daily: 0,
            weekly: 0,
            monthly: 0,
            yearly: 0,
            zone: Tz::UTC,
        }
    }
}

impl Calendar {
    /// How many periods of `kind` are kept.
    pub fn count(&self, kind: Period) -> u32 {
        match kind {
            Period::Hourly => self.hourly,
            Period::Daily => self.daily,
            Period::Weekly => self.weekly,
            Period::Monthly => self.monthly,
            Period::Yearly => self.yearly,
        }
    }

    /// Sets how many periods of `kind` are kept.
    pub fn set(&mut self, kind: Period, count: u32) {
        match kind {
            Period::Hourly => self.hourly = count,
            Period::Daily => self.daily = count,
            Period::Weekly => self.weekly = count,
            Period::Monthly => self.monthly = count,
            Period::Yearly => self.yearly = count,
        }
    }

    /// Whether no calendar rule is set.
    pub fn is_off(&self) -> bool {
        Period::ALL.iter().all(|p| self.count(*p) == 0)
    }

    /// The rules in words ("7 daily, 4 weekly and 12 monthly (periods in Europe/Berlin)"), or
    /// `None` when none is set.
    pub fn describe(&self) -> Option<String> {
        let parts: Vec<String> = Period::ALL
            .iter()
            .filter(|p| self.count(**p) > 0)
            .map(|p| format!("{} {}", self.count(*p), p.adjective()))
            .collect();
        let list = match parts.split_last() {
            None => return None,
            Some((last, [])) => last.clone(),
            Some((last, rest)) => format!("{} and {last}", rest.join(", ")),
        };
        Some(format!("{list} (periods in {})", self.zone.name()))
    }
}

/// The most periods of one kind a rule may keep (a century of days); larger counts, in a setting or
/// a record read back from storage, are refused.
pub const MAX_COUNT: u32 = 36_500;

impl Calendar {
    /// As the backup service records it.
    pub fn to_record(&self) -> KeepRecord {
        KeepRecord {
            hourly: self.hourly,
            daily: self.daily,
            weekly: self.weekly,
            monthly: self.monthly,
            yearly: self.yearly,
            timezone: self.zone.name().to_string(),
        }
    }

    /// From a record read back from storage (untrusted): the zone must be an IANA name and every
    /// count at most [`MAX_COUNT`].
    ///
    /// # Errors
    /// What is wrong with the record, in one sentence.
    pub fn from_record(r: &KeepRecord) -> Result<Calendar, String> {
        let zone = match r.timezone.as_str() {
            "" => Tz::UTC,
            name => name
                .parse::<Tz>()
                .map_err(|_| format!("the recorded time zone {name:?} is not one pgvigil knows"))?,
        };
        let cal = Calendar {
            hourly: r.hourly,
            daily: r.daily,
            weekly: r.weekly,
            monthly: r.monthly,
            yearly: r.yearly,
            zone,
        };
        match Period::ALL.iter().find(|p| cal.count(**p) > MAX_COUNT) {
            Some(p) => Err(format!("the recorded {} is larger than {MAX_COUNT}", p.variable())),
            None => Ok(cal),
        }
    }
}

/// The calendar periods for which a backup is its period's pick.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Periods(u8);

impl Periods {
    /// Whether `kind` is among them.
    pub fn contains(self, kind: Period) -> bool {
        self.0 & kind.bit() != 0
    }

    /// The kinds, shortest first.
    pub fn kinds(self) -> impl Iterator<Item = Period> {
        Period::ALL.into_iter().filter(move |p| self.contains(*p))
    }

    /// In plain words: "the backup kept for its day (BACKUP_KEEP_DAILY) and for its month
    /// (BACKUP_KEEP_MONTHLY)".
    pub fn describe(self) -> String {
        let parts: Vec<String> = self.kinds().map(|p| format!("its {} ({})", p.noun(), p.variable())).collect();
        format!("the backup kept for {}", parts.join(" and for "))
    }
}

fn preference(v: Verified) -> u8 {
    match v {
        Verified::Passed => 2,
        Verified::Not => 1,
        Verified::Failed => 0,
    }
}

/// The backups each calendar rule keeps (see the module documentation), by backup.
pub fn keeps(backups: &[Candidate], calendar: &Calendar, now: DateTime<Utc>) -> BTreeMap<BackupId, Periods> {
    let mut eligible: Vec<&Candidate> = backups.iter().filter(|c| c.complete && c.id.0 <= now).collect();
    eligible.sort_by_key(|c| std::cmp::Reverse(c.id));
    eligible.dedup_by_key(|c| c.id);
    let mut out: BTreeMap<BackupId, Periods> = BTreeMap::new();
    for kind in Period::ALL {
        let wanted = calendar.count(kind) as usize;
        if wanted == 0 {
            continue;
        }
        let mut picks: Vec<BackupId> = Vec::new();
        // The period being read (newest first) and its pick so far.
        let mut current: Option<(i64, &Candidate)> = None;
        for &c in &eligible {
            let slot = kind.slot(c.id.0, calendar.zone);
            if let Some((s, best)) = current.as_mut() {
                if *s == slot {
                    if preference(c.verified) > preference(best.verified) {
                        *best = c;
                    }
                    continue;
                }
            }
            if let Some((_, best)) = current.take() {
                picks.push(best.id);
            }
            if picks.len() == wanted {
                break;
            }
            current = Some((slot, c));
        }
        if let Some((_, best)) = current {
            if picks.len() < wanted {
                picks.push(best.id);
            }
        }
        for id in picks {
            out.entry(id).or_default().0 |= kind.bit();
        }
    }
    out
}

#[cfg(test)]
#[path = "calendar_tests.rs"]
mod tests;
