//! `pgvigil status`: the newest backup and verification, when the next backup is due, and a
//! Nagios-style verdict.

use super::{EffectivePolicy, Operator, OperatorError};
use crate::infra::storage::StorageError;
use crate::policy::schedule::due_in;
use crate::policy::status::{assess_status, Verdict};
use crate::records::catalog::{BackupEntry, Catalog};
use crate::records::history::{read_failure, read_verification, VerificationRecord};
use crate::records::holds;
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
        // A record that cannot be read still has the verdict its name gives (failed, when its
        // name is of the older kind that gives none), and says it cannot be read.
        let mut unreadable = None;
        let last_verification = match cat.verifications.last() {
            Some(v) => match read_verification(st, &v.key, cancel).await {
                Ok(r) => Some(r),
                Err(e) if e.spoils_the_record() || matches!(e, StorageError::NotFound(_)) => {
                    let why = format!("the newest verification record ({}) cannot be read: {e}", v.key);
                    // (A failed one says so in its reason.)
                    if v.passed == Some(true) {
                        unreadable = Some(why.clone());
                    }
                    Some(VerificationRecord {
                        key: v.key.clone(),
                        verified_at: v.at.0,
                        passed: v.passed == Some(true),
                        untrusted: false,
                        causes: Vec::new(),
                        reasons: vec![why],
                        restore_secs: 0.0,
                        checks_secs: 0.0,
                        total_secs: 0.0,
                        restored_bytes: None,
                        tables_checked: 0,
                        object_bytes: None,
                        backup_time: Some(v.backup.0),
                        rpo_secs: None,
                        evidence: Default::default(),
                    })
                }
                Err(e) => return Err(e.into()),
            },
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
        // A held backup means a table lost most of its rows and nobody has acknowledged it yet.
        let (mut verdict, mut problems) = (verdict, problems);
        if let Some(why) = unreadable {
            problems.push(why);
            verdict = verdict.max(Verdict::Warning);
        }
        for (id, hold) in holds::list(st, &self.layout, cancel).await? {
            problems.push(hold.problem(id));
            verdict = verdict.max(Verdict::Warning);
        }
        if let Some(f) = cat.future.first() {
            problems.push(format!(
                "{} backup(s) dated in the future are ignored and left in place, the newest {}: check the clocks of the backup host and this machine, and who can write to the bucket",
                cat.future.len(),
                f.key
            ));
            verdict = verdict.max(Verdict::Warning);
        }
        if let Some(why) = &policy.unusable {
            problems.push(format!("the backup service's recorded policy: {why}"));
            verdict = verdict.max(Verdict::Warning);
        }
        // Every backup retention keeps must still be in storage as its manifest says (not
        // judged when which backups are kept is unknown; a check that fails is a warning).
        if policy.unusable.is_none() {
            match crate::pipeline::backup::check_presence(st, &self.layout, policy.retention, cancel).await {
                Ok(rows) => {
                    let gone = crate::pipeline::backup::absent(&rows);
                    if !gone.is_empty() {
                        problems.push(format!(
                            "{} (pgvigil check --presence lists every kept backup)",
                            crate::pipeline::backup::summary(&gone)
                        ));
                        verdict = verdict.max(Verdict::Critical);
                    }
                }
                Err(crate::infra::storage::StorageError::Cancelled) => return Err(OperatorError::Cancelled),
                Err(e) => {
                    problems.push(format!("the presence check could not run: {e}"));
                    verdict = verdict.max(Verdict::Warning);
                }
            }
        }
        let retention = policy.unusable.is_none().then_some(policy.retention);
        for (v, text) in self.other_destination_problems(newest.as_ref(), retention, cancel).await? {
            problems.push(text);
            verdict = verdict.max(v);
        }
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

impl Operator {
    /// `pgvigil ack`, given a backup's file name, key or timestamp: lifts its hold (a table
    /// anomaly), and for a backup whose object is gone from storage, acknowledges the loss by
    /// removing its manifest, so the presence check stops reporting it. Says what it did.
    ///
    /// # Errors
    /// No such backup, neither held nor missing; storage errors.
    pub async fn ack(&self, which: &str, cancel: &CancellationToken) -> Result<String, OperatorError> {
        let name = which.rsplit('/').next().unwrap_or(which);
        let id = crate::records::keys::BackupId::parse_file_name(name)
            .or_else(|| crate::records::keys::BackupId::parse_stamp(name))
            .ok_or_else(|| OperatorError::Usage(format!("{which:?} is not a backup name (backup_2026-11-25T12-00-00Z.sql.gz)")))?;
        let st = self.storage.as_ref();
        let mut done = Vec::new();
        if holds::lift(st, &self.layout, id, cancel).await? {
            done.push(format!(
                "{}: hold lifted; retention treats it like any other backup again",
                id.file_name()
            ));
        }
        let cat = Catalog::load(st, &self.layout, cancel).await?;
        // Only a backup whose object answers to neither of its names, asked directly (a listing
        // may lag, or be taken mid-write): a good backup's manifest is never removed.
        let mut object_exists = false;
        for key in self.layout.objects(id) {
            object_exists |= st.head(&key, cancel).await?.is_some();
        }
        if cat.orphan_manifests.contains(&id) && !object_exists {
            let mut keys = vec![self.layout.manifest(id)];
            if cat.signatures.contains(&id) {
                keys.push(self.layout.manifest_signature(id));
            }
            st.delete_many(&keys, cancel).await?;
            done.push(format!(
                "{}: its object is gone from storage; the loss is acknowledged (its manifest removed), and the presence check no longer reports it",
                id.file_name()
            ));
        }
        if done.is_empty() {
            return Err(OperatorError::Usage(format!(
                "{} is neither held nor missing from storage (pgvigil status lists both; a backup whose object was replaced is acknowledged by deleting the object first)",
                id.file_name()
            )));
        }
        Ok(done.join("\n"))
    }
}
