//! `pgvigil check --last N [--deep]`: proves the newest N backups intact without restoring them,
//! and names the newest good one. By default each object's size and SHA-256 are compared with its
//! manifest, at the speed storage delivers (no identity needed for encrypted ones); `--deep` also
//! streams it through the integrity stages (decryption, every gzip member, the closing line).
//! `--presence` instead lists every backup retention keeps and compares each object's listed size
//! with its manifest, downloading nothing: the check for lifecycle rules and clean-up scripts.

use super::{Observer, Operator, OperatorError};
use crate::infra::storage::Key;
use crate::pipeline::restore::{digest, integrity_problems, key_fault, StreamError};
use crate::records::catalog::Catalog;
use crate::records::manifest::{self, Manifest};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

/// One checked backup.
#[derive(Debug, Clone, Serialize)]
pub struct CheckRow {
    /// Object key.
    pub key: String,
    /// True when the object is exactly what the backup wrote and a complete dump.
    pub ok: bool,
    /// Why not.
    pub problems: Vec<String>,
}

/// Everything `check` found.
#[derive(Debug, Clone, Serialize)]
pub struct CheckReport {
    /// What was proven, in words (which depth ran).
    pub depth: &'static str,
    /// Newest first.
    pub backups: Vec<CheckRow>,
    /// The newest backup that passed.
    pub newest_good: Option<String>,
}

impl CheckReport {
    /// True when the newest backup is bad or there is none.
    pub fn newest_is_bad(&self) -> bool {
        self.backups.first().is_none_or(|r| !r.ok)
    }
}

impl Operator {
    /// Checks the newest `last` backups.
    ///
    /// # Errors
    /// Storage errors (a backup that cannot be read is not called corrupted), or cancellation.
    pub async fn check(
        &self,
        last: usize,
        deep: bool,
        observer: &dyn Observer,
        cancel: &CancellationToken,
    ) -> Result<CheckReport, OperatorError> {
        let cat = Catalog::load(self.storage.as_ref(), &self.layout, cancel).await?;
        let mut backups = Vec::new();
        // Complete backups only: an object whose manifest is not written yet (a backup in
        // progress, or one that never completed) is not a backup to judge.
        for b in cat.complete().take(last) {
            let problems = match self.trusted_manifest(b.id, cancel).await? {
                Err(why) => vec![why],
                Ok(m) => {
                    let key = self.layout.object(b.id, b.key.ends_with(crate::records::keys::SEALED));
                    if deep {
                        self.deep_check(&key, b.size, m.as_ref(), observer, cancel).await?
                    } else {
                        self.hash_check(&key, b.size, m.as_ref(), observer, cancel).await?
                    }
                }
            };
            backups.push(CheckRow {
                key: b.key.clone(),
                ok: problems.is_empty(),
                problems,
            });
        }
        let newest_good = backups.iter().find(|r| r.ok).map(|r| r.key.clone());
        Ok(CheckReport {
            depth: if deep { DEEP } else { SHALLOW },
            backups,
            newest_good,
        })
    }

    /// The object's size and SHA-256 against its manifest.
    async fn hash_check(
        &self,
        key: &Key,
        size: u64,
        m: Option<&Manifest>,
        observer: &dyn Observer,
        cancel: &CancellationToken,
    ) -> Result<Vec<String>, OperatorError> {
        let progress = observer.begin(&format!("hashing {key}"), size);
        let hashed = digest(self.storage.as_ref(), key, progress, cancel).await;
        observer.end();
        let (sha256, size) = hashed.map_err(|e| stream_failure(key, e, |why| why))?;
        Ok(identity_problems(m, &sha256, size))
    }

    /// Every member inflated and every statement scanned, as a restore would read them.
    async fn deep_check(
        &self,
        key: &Key,
        size: u64,
        m: Option<&Manifest>,
        observer: &dyn Observer,
        cancel: &CancellationToken,
    ) -> Result<Vec<String>, OperatorError> {
        let progress = observer.begin(&format!("checking {key}"), size);
        let streamed = crate::pipeline::restore::deep(self.storage.as_ref(), key, &self.settings.identities.0, progress, cancel).await;
        observer.end();
        let report = streamed.map_err(|e| stream_failure(key, e, |why| format!("cannot check {key}: {why}")))?;
        if let Some(why) = key_fault(m, &report) {
            return Err(OperatorError::Usage(format!(
                "cannot check {key} beyond its size and SHA-256 (which match): {why}"
            )));
        }
        Ok(integrity_problems(m, &report))
    }
}

/// A read of `key` that stopped: cancelled, a key that opens nothing (in the words `usage` gives
/// it), or storage.
fn stream_failure(key: &Key, e: StreamError, usage: impl FnOnce(String) -> String) -> OperatorError {
    match e {
        StreamError::Cancelled => OperatorError::Cancelled,
        StreamError::Key(why) => OperatorError::Usage(usage(why)),
        StreamError::Storage(source) => OperatorError::Unreadable {
            key: key.to_string(),
            source,
        },
    }
}

impl Operator {
    /// `check --presence`: every backup `policy` keeps is listed, with its manifest's size, in
    /// every destination.
    ///
    /// # Errors
    /// Storage errors.
    pub async fn check_presence(&self, policy: &super::EffectivePolicy, cancel: &CancellationToken) -> Result<CheckReport, OperatorError> {
        if let Some(why) = &policy.unusable {
            return Err(OperatorError::Usage(format!("cannot tell which backups are kept: {why}")));
        }
        let mut rows = crate::pipeline::backup::check_presence(self.storage.as_ref(), &self.layout, policy.retention, cancel).await?;
        // With a second destination, it is checked too.
        rows.extend(self.other_destination_presence(policy.retention, cancel).await?);
        let backups: Vec<CheckRow> = rows
            .into_iter()
            .map(|r| CheckRow {
                key: r.key,
                ok: r.problem.is_none(),
                problems: r.problem.into_iter().collect(),
            })
            .collect();
        Ok(CheckReport {
            depth: PRESENCE,
            newest_good: backups.iter().find(|r| r.ok).map(|r| r.key.clone()),
            backups,
        })
    }
}

/// `--presence`, in words.
const PRESENCE: &str =
    "presence: every backup retention keeps is listed in storage with the size its manifest records (nothing downloaded)";
/// The default depth, in words.
const SHALLOW: &str = "size and SHA-256 of each object against its manifest (the bytes are exactly what the backup wrote); --deep also inflates it and finds pg_dump's closing line";
/// `--deep`, in words.
const DEEP: &str = "deep: size and SHA-256 against the manifest, every gzip member inflated (decrypted first when encrypted), and pg_dump's closing line found";

/// What the default depth can say: the manifest is there and the object matches it byte for byte.
fn identity_problems(m: Option<&manifest::Manifest>, sha256: &str, size: u64) -> Vec<String> {
    let report = crate::pipeline::restore::StreamReport {
        sha256: sha256.to_string(),
        size,
        // Not looked at: only the manifest comparison below counts.
        scan: crate::pipeline::stages::dumpscan::ScanResult {
            complete: true,
            ..Default::default()
        },
        ..Default::default()
    };
    integrity_problems(m, &report)
}
