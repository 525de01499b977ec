//! Retention: which backups may be deleted. A pure function of (backups and their verdicts,
//! policy, now); see [`plan`] for the rules. A backup is deleted only when no rule keeps it.
//! Evidence is never pruned away: the newest backup that passed verification survives, and
//! backups that failed verification do not count toward `min_keep`. Calendar rules
//! ([`super::calendar`]) only ever keep more.

use super::calendar::{self, Calendar, Periods};
use crate::records::keys::BackupId;
use chrono::{DateTime, Duration, Utc};

/// What retention may delete.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetentionPolicy {
    /// Delete backups older than this many days.
    pub retention_days: u64,
    /// Never keep fewer complete backups than this.
    pub min_keep: usize,
    /// Keep the newest backup of each of the last N hours, days, weeks, months, years.
    pub calendar: Calendar,
}

impl RetentionPolicy {
    /// Age and `min_keep` only, no calendar rule.
    pub fn simple(retention_days: u64, min_keep: usize) -> Self {
        RetentionPolicy {
            retention_days,
            min_keep,
            calendar: Calendar::default(),
        }
    }

    /// Every rule in one sentence, for `pgvigil prune` and the start line.
    pub fn describe(&self) -> String {
        let mut s = format!(
            "delete backups older than {} days; keep at least {} complete backups that did not fail verification, the newest backup, and the newest one that passed verification",
            self.retention_days, self.min_keep
        );
        if let Some(cal) = self.calendar.describe() {
            s.push_str(&format!("; keep the newest backup of each period: {cal}"));
        }
        s
    }
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

/// A rule that keeps a backup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeptBecause {
    /// It is younger than `BACKUP_RETENTION_DAYS` (or stamped in the future).
    Window,
    /// It is the newest complete backup.
    Newest,
    /// It is one of the newest `min_keep` complete backups.
    MinKeep,
    /// It is the newest backup of one or more calendar periods.
    Calendar(Periods),
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
    /// Whether the bare policy (age, `min_keep`, the newest backup) keeps it by itself.
    fn is_bare(self) -> bool {
        matches!(self, KeptBecause::Window | KeptBecause::Newest | KeptBecause::MinKeep)
    }

    /// A short label for tables ("daily+monthly", "min-keep").
    pub fn label(self) -> String {
        match self {
            KeptBecause::Window => "window".into(),
            KeptBecause::Newest => "newest".into(),
            KeptBecause::MinKeep | KeptBecause::MinKeepWithoutFailed => "min-keep".into(),
            KeptBecause::Calendar(p) => p.kinds().map(|k| k.adjective()).collect::<Vec<_>>().join("+"),
            KeptBecause::NewestVerified => "newest-verified".into(),
            KeptBecause::Held => "held".into(),
            KeptBecause::Locked(_) => "locked".into(),
        }
    }

    /// In plain words.
    pub fn describe(self) -> String {
        match self {
            KeptBecause::Window => "within BACKUP_RETENTION_DAYS".into(),
            KeptBecause::Newest => "the newest complete backup".into(),
            KeptBecause::MinKeep => "within BACKUP_MIN_KEEP".into(),
            KeptBecause::Calendar(p) => p.describe(),
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
    /// Backups kept although the bare policy (age and `min_keep` alone) would delete them, oldest
    /// first, with the main reason.
    pub kept: Vec<(BackupId, KeptBecause)>,
    /// Every backup kept, newest first, with every rule that keeps it.
    pub rules: Vec<(BackupId, Vec<KeptBecause>)>,
}

impl Plan {
    /// The rules that keep `id` (empty when it is deleted or unknown).
    pub fn rules_of(&self, id: BackupId) -> &[KeptBecause] {
        self.rules.iter().find(|(b, _)| *b == id).map_or(&[], |(_, r)| r.as_slice())
    }

    /// Records one more rule for a kept backup (an object lock found by the caller).
    pub fn keep(&mut self, id: BackupId, why: KeptBecause) {
        self.delete.retain(|d| *d != id);
        match self.rules.iter_mut().find(|(b, _)| *b == id) {
            Some((_, r)) => r.push(why),
            None => {
                self.rules.push((id, vec![why]));
                self.rules.sort_by_key(|(b, _)| std::cmp::Reverse(*b));
            }
        }
        if !self.kept.iter().any(|(b, _)| *b == id) && !self.rules_of(id).iter().any(|r| r.is_bare()) {
            self.kept.push((id, why));
            self.kept.sort_by_key(|(b, _)| *b);
        }
    }
}

/// The main reason a backup beyond the bare policy is kept.
fn main_reason(rules: &[KeptBecause]) -> Option<KeptBecause> {
    let rank = |k: &KeptBecause| match k {
        KeptBecause::Held => 0,
        KeptBecause::Locked(_) => 1,
        KeptBecause::NewestVerified => 2,
        KeptBecause::Calendar(_) => 3,
        _ => 4,
    };
    if rules.iter().any(|r| r.is_bare()) {
        return None;
    }
    rules.iter().min_by_key(|k| rank(k)).copied()
}

/// The retention plan. A backup is kept when any rule keeps it, and deleted otherwise. Rules:
/// only pgvigil-named backups are candidates (callers pass only parsed names); backups younger
/// than `retention_days` are kept (a backup stamped in the future, clock skew, is never old); the
/// newest complete backup is kept; the newest `min_keep` complete backups are kept, and so are
/// the newest `min_keep` that did not fail verification; the newest backup that passed
/// verification is kept; held backups are kept; each calendar rule keeps its periods' picks.
pub fn plan(backups: &[Candidate], policy: RetentionPolicy, now: DateTime<Utc>) -> Plan {
    let mut sorted: Vec<Candidate> = backups.to_vec();
    sorted.sort_by_key(|c| std::cmp::Reverse(c.id));
    sorted.dedup_by_key(|c| c.id);
    let cutoff = now - Duration::days(policy.retention_days.min(100_000) as i64);
    let newest_verified = sorted.iter().find(|c| c.complete && c.verified == Verified::Passed).map(|c| c.id);
    let calendar = calendar::keeps(&sorted, &policy.calendar, now);
    let min_keep = policy.min_keep.max(1);
    let (mut complete_seen, mut usable_seen) = (0usize, 0usize);
    let mut out = Plan::default();
    for c in &sorted {
        let mut rules = Vec::new();
        if c.id.0 >= cutoff {
            rules.push(KeptBecause::Window);
        }
        if c.complete {
            if complete_seen == 0 {
                rules.push(KeptBecause::Newest);
            }
            if complete_seen < min_keep {
                rules.push(KeptBecause::MinKeep);
            } else if c.verified != Verified::Failed && usable_seen < min_keep {
                rules.push(KeptBecause::MinKeepWithoutFailed);
            }
            complete_seen += 1;
            if c.verified != Verified::Failed {
                usable_seen += 1;
            }
        }
        if Some(c.id) == newest_verified {
            rules.push(KeptBecause::NewestVerified);
        }
        if c.held {
            rules.push(KeptBecause::Held);
        }
        if let Some(periods) = calendar.get(&c.id) {
            rules.push(KeptBecause::Calendar(*periods));
        }
        if rules.is_empty() {
            out.delete.push(c.id);
        } else {
            if let Some(why) = main_reason(&rules) {
                out.kept.push((c.id, why));
            }
            out.rules.push((c.id, rules));
        }
    }
    out.delete.reverse();
    out.kept.reverse();
    out
}

#[cfg(test)]
#[path = "retention_tests.rs"]
mod tests;
