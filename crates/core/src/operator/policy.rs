//! Which policy the operator commands apply: the one the services recorded when they started,
//! unless the command line overrides it; this shell's own settings only when no service has
//! recorded one. A service running with `BACKUP_RETENTION_DAYS=30` is never pruned with a
//! shell's default of 7.

use super::{Operator, OperatorError};
use crate::policy::calendar::Calendar;
use crate::policy::retention::RetentionPolicy;
use crate::records::policy;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Settings given on the command line; they win over everything else.
#[derive(Debug, Clone, Copy, Default)]
pub struct PolicyOverrides {
    /// `--retention-days`.
    pub retention_days: Option<u64>,
    /// `--min-keep`.
    pub min_keep: Option<usize>,
    /// `--backup-interval` (seconds).
    pub backup_interval: Option<u64>,
    /// `--verify-interval` (seconds).
    pub verify_interval: Option<u64>,
}

/// The policy a command applies, and where it came from.
#[derive(Debug, Clone)]
pub struct EffectivePolicy {
    /// Retention.
    pub retention: RetentionPolicy,
    /// Time between backups.
    pub backup_interval: Duration,
    /// Time between verifications.
    pub verify_interval: Duration,
    /// Where it came from, in plain words.
    pub source: String,
    /// Whether the retention comes from the backup service's record or the command line (and not
    /// merely from this shell's settings).
    pub retention_is_known: bool,
    /// Why the backup service's recorded policy cannot be used (out-of-range values, a time zone
    /// this build does not know): read back from storage, it is untrusted. `prune` and
    /// `check --presence` then refuse; `status`, `report` and `list` fall back to this shell's
    /// settings and say so.
    pub unusable: Option<String>,
}

/// The recorded retention and interval, checked like the variables they came from.
fn recorded(b: &policy::BackupPolicy) -> Result<(RetentionPolicy, Duration), String> {
    if !(1..=36_500).contains(&b.retention_days) {
        return Err(format!("retention_days {} is outside 1–36500", b.retention_days));
    }
    if !(1..=10_000).contains(&b.min_keep) {
        return Err(format!("min_keep {} is outside 1–10000", b.min_keep));
    }
    if !(1..=31_622_400).contains(&b.interval_secs) {
        return Err(format!("interval_secs {} is outside 1–31622400", b.interval_secs));
    }
    let calendar = Calendar::from_record(&b.keep)?;
    let retention = RetentionPolicy {
        retention_days: b.retention_days,
        min_keep: b.min_keep,
        calendar,
    };
    Ok((retention, Duration::from_secs(b.interval_secs)))
}

impl Operator {
    /// The policy to apply (see the module documentation).
    ///
    /// # Errors
    /// Storage errors reading the recorded policies.
    pub async fn policy(&self, o: &PolicyOverrides, cancel: &CancellationToken) -> Result<EffectivePolicy, OperatorError> {
        let st = self.storage.as_ref();
        let backup = policy::read_backup(st, &self.layout, cancel).await?;
        let verify = policy::read_verify(st, &self.layout, cancel).await?;
        let shell = &self.settings;
        let mut sources = Vec::new();
        let mut unusable = None;
        let (retention, backup_interval) = match backup.as_ref().map(|b| (b, recorded(b))) {
            Some((b, Ok(r))) => {
                sources.push(format!(
                    "the backup service's policy (recorded {})",
                    b.recorded_at.format("%Y-%m-%d %H:%M UTC")
                ));
                r
            }
            // Never "no calendar rule" or a made-up age in place of what the service runs with.
            Some((_, Err(why))) => {
                let why = format!(
                    "{} cannot be used ({why}); restarting the backup service records it again",
                    self.layout.policy("backup")
                );
                sources.push(format!("this shell's settings, because {why}"));
                unusable = Some(why);
                (shell.backup.retention, shell.backup.interval)
            }
            None => {
                sources.push("this shell's settings (no backup service has recorded its policy under this prefix)".to_string());
                (shell.backup.retention, shell.backup.interval)
            }
        };
        let verify_interval = match &verify {
            Some(v) => Duration::from_secs(v.interval_secs.clamp(1, 31_622_400)),
            None => shell.verify.interval,
        };
        let mut overridden = Vec::new();
        let retention = RetentionPolicy {
            retention_days: o
                .retention_days
                .inspect(|_| overridden.push("--retention-days"))
                .unwrap_or(retention.retention_days),
            min_keep: o.min_keep.inspect(|_| overridden.push("--min-keep")).unwrap_or(retention.min_keep),
            calendar: retention.calendar,
        };
        let backup_interval = o
            .backup_interval
            .inspect(|_| overridden.push("--backup-interval"))
            .map_or(backup_interval, Duration::from_secs);
        let verify_interval = o
            .verify_interval
            .inspect(|_| overridden.push("--verify-interval"))
            .map_or(verify_interval, Duration::from_secs);
        if !overridden.is_empty() {
            sources.push(format!("with {} from the command line", overridden.join(", ")));
        }
        Ok(EffectivePolicy {
            retention,
            backup_interval,
            verify_interval,
            source: sources.join(", "),
            retention_is_known: (backup.is_some() && unusable.is_none()) || o.retention_days.is_some(),
            unusable,
        })
    }
}
