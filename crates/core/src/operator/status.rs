//! `pgvigil status`: the newest backup and verification, when the next backup is due, and a
//! Nagios-style verdict.

use super::{EffectivePolicy, Operator, OperatorError};
use crate::policy::schedule::due_in;
use crate::policy::status::{assess_status, Verdict};
use crate::records::catalog::{BackupEntry, Catalog};
use crate::records::history::{read_failure, read_verification, VerificationRecord};
use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;

/// What `status` shows.
#[derive(Debug, Clone)]
pub struct StatusView {
    /// When it was computed.
    pub now: DateTime<Utc>,
    /// OK, WARNING or CRITICAL.
    pub verdict: Verdict,
    /// Every problem found, in plain words.
    pub problems: Vec<String>,
    /// The newest complete backup.
    pub newest: Option<BackupEntry>,
    /// The newest verification record.
    pub last_verification: Option<VerificationRecord>,
    /// Seconds until the next backup is due (`None`: no backup yet).
    pub next_backup_due_in_secs: Option<i64>,
}

impl Operator {
    /// Computes the status of the prefix.
    ///
    /// # Errors
    /// Storage errors.
    pub async fn status(&self, policy: &EffectivePolicy, cancel: &CancellationToken) -> Result<StatusView, OperatorError> {
        let st = self.storage.as_ref();
        let cat = Catalog::load(st, &self.layout, cancel).await?;
        let now = Utc::now();
        let newest = cat.newest_complete().cloned();
        let last_verification = match cat.verifications.last() {
            Some(v) => Some(read_verification(st, &v.key, cancel).await?),
            None => None,
        };
        let failure = match cat.failures.last() {
            Some((_, key)) => read_failure(st, key, cancel).await.ok(),
            None => None,
        };
        let (verdict, problems) = assess_status(
            now,
            newest.as_ref(),
            last_verification.as_ref(),
            failure.as_ref(),
            policy.backup_interval,
            policy.verify_interval,
        );
        let next_backup_due_in_secs = newest
            .as_ref()
            .map(|b| due_in(Some(b.id.0), policy.backup_interval, now).as_secs() as i64);
        Ok(StatusView {
            now,
            verdict,
            problems,
            newest,
            last_verification,
            next_backup_due_in_secs,
        })
    }
}
