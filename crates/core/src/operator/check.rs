//! `pgvigil check --last N`: streams the newest N backups through the integrity stages without
//! restoring them, and names the newest good one.

use super::{Observer, Operator, OperatorError};
use crate::pipeline::restore::{integrity_problems, key_fault, stream, StreamError};
use crate::records::catalog::Catalog;
use crate::records::manifest;
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
    pub async fn check(&self, last: usize, observer: &dyn Observer, cancel: &CancellationToken) -> Result<CheckReport, OperatorError> {
        let st = self.storage.as_ref();
        let cat = Catalog::load(st, &self.layout, cancel).await?;
        let mut backups = Vec::new();
        for b in cat.backups.iter().take(last) {
            let m = manifest::read(st, &self.layout, b.id, cancel).await?;
            let key = self.layout.object(b.id, b.key.ends_with(crate::records::keys::SEALED));
            let progress = observer.begin(&format!("checking {key}"), b.size);
            let streamed = stream(st, &key, &self.settings.identities.0, progress, cancel).await;
            observer.end();
            let report = match streamed {
                Ok(r) => r,
                Err(StreamError::Cancelled) => return Err(OperatorError::Cancelled),
                Err(StreamError::Key(why)) => return Err(OperatorError::Usage(format!("cannot check {key}: {why}"))),
                Err(StreamError::Storage(source)) => {
                    return Err(OperatorError::Unreadable {
                        key: key.to_string(),
                        source,
                    })
                }
            };
            if let Some(why) = key_fault(m.as_ref(), &report) {
                return Err(OperatorError::Usage(format!(
                    "cannot check {key} beyond its size and SHA-256 (which match): {why}"
                )));
            }
            let problems = integrity_problems(m.as_ref(), &report);
            backups.push(CheckRow {
                key: b.key.clone(),
                ok: problems.is_empty(),
                problems,
            });
        }
        let newest_good = backups.iter().find(|r| r.ok).map(|r| r.key.clone());
        Ok(CheckReport { backups, newest_good })
    }
}
