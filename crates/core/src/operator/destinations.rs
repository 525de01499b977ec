//! The second destination as the operator commands see it: `status` says whether it lacks the
//! newest backup or keeps backups that are gone, and `check --presence` checks it too.

use super::{Operator, OperatorError};
use crate::infra::storage::{self, DynStorage, StorageError};
use crate::pipeline::backup::{absent, check_presence, summary, Presence};
use crate::policy::retention::RetentionPolicy;
use crate::policy::status::Verdict;
use crate::records::catalog::{BackupEntry, Catalog};
use tokio_util::sync::CancellationToken;

/// How long a command waits for the other destination before it says it did not answer.
pub(super) const ANSWER_WITHIN: std::time::Duration = std::time::Duration::from_secs(60);

/// A presence row for a destination that could not be checked.
fn unchecked(name: &str, why: &str) -> Presence {
    Presence {
        id: crate::records::keys::BackupId(chrono::DateTime::<chrono::Utc>::UNIX_EPOCH),
        key: format!("[{name}] (not checked)"),
        problem: Some(format!("the {name} destination could not be checked: {why}")),
    }
}

impl Operator {
    /// The other destination's store and its name, when one is configured.
    ///
    /// # Errors
    /// When its client cannot be built.
    pub(super) async fn other_destination(&self) -> Result<Option<(&'static str, DynStorage)>, OperatorError> {
        let Some(cfg) = &self.settings.secondary else { return Ok(None) };
        let name = crate::pipeline::backup::destination_name(!self.settings.reading_secondary);
        Ok(Some((name, storage::connect(cfg).await?)))
    }

    /// The problems of the other destination, for `status`: it cannot be read, it lacks the
    /// newest backup, or a backup it keeps is gone or changed.
    ///
    /// # Errors
    /// Cancellation only: everything else is a problem to show.
    pub(super) async fn other_destination_problems(
        &self,
        newest: Option<&BackupEntry>,
        retention: Option<RetentionPolicy>,
        cancel: &CancellationToken,
    ) -> Result<Vec<(Verdict, String)>, OperatorError> {
        let (name, st) = match self.other_destination().await {
            Ok(Some(found)) => found,
            Ok(None) => return Ok(Vec::new()),
            Err(e) => return Ok(vec![(Verdict::Warning, format!("the second destination cannot be opened: {e}"))]),
        };
        let mut out = Vec::new();
        let loaded = tokio::time::timeout(ANSWER_WITHIN, Catalog::load(st.as_ref(), &self.layout, cancel))
            .await
            .unwrap_or_else(|_| Err(StorageError::other("it did not answer within 60 s", true)));
        let cat = match loaded {
            Ok(cat) => cat,
            Err(StorageError::Cancelled) => return Err(OperatorError::Cancelled),
            Err(e) => {
                return Ok(vec![(
                    Verdict::Warning,
                    format!("the {name} destination cannot be read ({e}): backups go to one destination only until it is back"),
                )])
            }
        };
        if let Some(newest) = newest {
            if !cat.backups.iter().any(|b| b.complete && b.id == newest.id) {
                out.push((
                    Verdict::Warning,
                    format!(
                        "the {name} destination lacks the newest backup {}: the backup service copies it there after its next backup",
                        newest.id.file_name()
                    ),
                ));
            }
        }
        if let Some(retention) = retention {
            let checked = tokio::time::timeout(ANSWER_WITHIN, check_presence(st.as_ref(), &self.layout, retention, cancel))
                .await
                .unwrap_or_else(|_| Err(StorageError::other("it did not answer within 60 s", true)));
            match checked {
                Ok(rows) => {
                    let gone = absent(&rows);
                    if !gone.is_empty() {
                        out.push((
                            Verdict::Critical,
                            format!(
                                "in the {name} destination: {} (pgvigil check --presence lists every kept backup)",
                                summary(&gone)
                            ),
                        ));
                    }
                }
                Err(StorageError::Cancelled) => return Err(OperatorError::Cancelled),
                Err(e) => out.push((
                    Verdict::Warning,
                    format!("the presence check of the {name} destination could not run: {e}"),
                )),
            }
        }
        Ok(out)
    }

    /// The presence rows of the other destination, each key marked with its name.
    ///
    /// # Errors
    /// Storage errors.
    pub(super) async fn other_destination_presence(
        &self,
        retention: RetentionPolicy,
        cancel: &CancellationToken,
    ) -> Result<Vec<Presence>, OperatorError> {
        let Some((name, st)) = self.other_destination().await? else {
            return Ok(Vec::new());
        };
        let rows = match tokio::time::timeout(ANSWER_WITHIN, check_presence(st.as_ref(), &self.layout, retention, cancel)).await {
            Ok(Ok(rows)) => rows,
            Ok(Err(StorageError::Cancelled)) => return Err(OperatorError::Cancelled),
            // The primary's rows stand; this destination is one row saying why it was not checked.
            Ok(Err(e)) => return Ok(vec![unchecked(name, &e.to_string())]),
            Err(_) => return Ok(vec![unchecked(name, "it did not answer within 60 s")]),
        };
        Ok(rows
            .into_iter()
            .map(|r| Presence {
                key: format!("[{name}] {}", r.key),
                ..r
            })
            .collect())
    }
}
