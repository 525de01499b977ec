//! `pgvigil list`: backups, newest first, with their size change and verification result.

use super::{Operator, OperatorError};
use crate::policy::anomaly;
use crate::records::catalog::Catalog;
use crate::records::history::read_verification;
use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

/// One backup as `list` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct ListRow {
    /// Object key.
    pub key: String,
    /// When it was taken.
    pub time: DateTime<Utc>,
    /// Object size.
    pub size: u64,
    /// Whether its manifest exists.
    pub complete: bool,
    /// Relative size change against the median of up to seven earlier backups.
    pub change_vs_median: Option<f64>,
    /// The newest verification's result, if it was verified.
    pub verified: Option<bool>,
}

impl Operator {
    /// Up to `limit` backups, newest first.
    ///
    /// # Errors
    /// Storage errors.
    pub async fn list(&self, limit: usize, cancel: &CancellationToken) -> Result<Vec<ListRow>, OperatorError> {
        let st = self.storage.as_ref();
        let cat = Catalog::load(st, &self.layout, cancel).await?;
        let mut rows = Vec::new();
        for b in cat.backups.iter().take(limit) {
            let recent = cat.recent_sizes_before(b.id, 7);
            let verified = match cat.latest_verification_of(b.id) {
                Some(v) if v.passed.is_some() => v.passed,
                Some(v) => read_verification(st, &v.key, cancel).await.ok().map(|r| r.passed),
                None => None,
            };
            rows.push(ListRow {
                key: b.key.clone(),
                time: b.id.0,
                size: b.size,
                complete: b.complete,
                change_vs_median: anomaly::change(b.size, &recent),
                verified,
            });
        }
        Ok(rows)
    }
}
