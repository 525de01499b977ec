//! `pgvigil list`: backups, newest first, with their size change, verification result, and the
//! retention rules that keep each one (or that the next prune deletes it).

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
    /// The retention rules that keep it, as short labels (`window`, `newest`, `min-keep`,
    /// `newest-verified`, `held`, `locked`, `daily+monthly`…); empty when no rule does.
    pub kept_by: Vec<String>,
    /// True when no rule keeps it: the next prune deletes it. False also when the policy could
    /// not be read (then `kept_by` is empty and `policy_unknown` is set).
    pub deleted_next: bool,
    /// True when the retention policy could not be determined (a recorded policy that cannot be
    /// used, or storage trouble while planning).
    pub policy_unknown: bool,
}

impl Operator {
    /// Up to `limit` backups, newest first.
    ///
    /// # Errors
    /// Storage errors.
    pub async fn list(&self, limit: usize, cancel: &CancellationToken) -> Result<Vec<ListRow>, OperatorError> {
        let st = self.storage.as_ref();
        let cat = Catalog::load(st, &self.layout, cancel).await?;
        // The same plan `pgvigil prune --dry-run` shows (under the same policy); a recorded
        // policy that cannot be used leaves the column at "?" rather than failing the listing.
        let plan = match self.policy(&super::PolicyOverrides::default(), cancel).await {
            Ok(policy) => self.prune_plan(&policy, cancel).await.ok().map(|p| p.plan),
            Err(_) => None,
        };
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
                kept_by: plan
                    .as_ref()
                    .map_or_else(Vec::new, |p| p.rules_of(b.id).iter().map(|r| r.label()).collect()),
                deleted_next: plan.as_ref().is_some_and(|p| p.delete.contains(&b.id)),
                policy_unknown: plan.is_none(),
            });
        }
        Ok(rows)
    }
}
