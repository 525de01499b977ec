//! `pgvigil report`: loads the records of the window and computes the weekly review.

use super::{EffectivePolicy, Operator, OperatorError};
use crate::policy::report::{self, Report, ReportInput};
use crate::records::catalog::Catalog;
use crate::records::history::{read_failure, read_verification};
use crate::records::keys::{BackupId, META_ROOT};
use crate::records::manifest;
use chrono::Utc;
use tokio_util::sync::CancellationToken;

impl Operator {
    /// The report over the last `days` days.
    ///
    /// # Errors
    /// Storage errors.
    pub async fn report(&self, days: u32, policy: &EffectivePolicy, cancel: &CancellationToken) -> Result<Report, OperatorError> {
        let st = self.storage.as_ref();
        let layout = &self.layout;
        let cat = Catalog::load(st, layout, cancel).await?;
        let now = Utc::now();
        let since = BackupId::at(now - chrono::Duration::days(i64::from(days)));
        let mut verifications = Vec::new();
        for v in cat.verifications.iter().filter(|v| v.at >= since) {
            verifications.push(read_verification(st, &v.key, cancel).await?);
        }
        let mut failures = Vec::new();
        for (_, key) in cat.failures.iter().filter(|(at, _)| *at >= since) {
            failures.push(read_failure(st, key, cancel).await?);
        }
        let mut backup_durations = Vec::new();
        for b in cat.complete().filter(|b| b.id >= since) {
            if let Some(m) = manifest::read(st, layout, b.id, cancel).await? {
                backup_durations.push(m.duration_secs());
            }
        }
        let mut objects = st.list(&layout.backups_prefix(), cancel).await?;
        objects.extend(st.list(&format!("{META_ROOT}/{}/", layout.prefix()), cancel).await?);
        let input = ReportInput {
            now,
            days,
            backups: cat.backups.clone(),
            backup_durations,
            verifications,
            failures,
            total_bytes: objects.iter().map(|o| o.size).sum(),
            object_count: objects.len(),
            retention_days: policy.retention.retention_days,
            calendar: policy.retention.calendar.describe(),
            price_per_gb_month: self.settings.price_per_gb_month,
            verified: cat.verifications.iter().map(|v| (v.at.0, v.backup)).collect(),
        };
        Ok(report::compute(&input))
    }
}
