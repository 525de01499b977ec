//! `pgvigil report`: loads the records of the window and computes the weekly review, or writes it
//! as the status page (`--html`).

use super::{EffectivePolicy, Operator, OperatorError};
use crate::policy::report::{self, Report, ReportInput, ReportSettings};
use crate::records::timeline::{RecordCache, Timeline};
use crate::view::page::{self, Database, Page, WINDOWS};
use chrono::Utc;
use tokio_util::sync::CancellationToken;

impl Operator {
    fn report_settings(&self, policy: &EffectivePolicy) -> ReportSettings {
        ReportSettings {
            retention_days: policy.retention.retention_days,
            calendar: policy.retention.calendar.describe(),
            price_per_gb_month: self.settings.price_per_gb_month,
        }
    }

    /// The report over the last `days` days and, with `page`, the status page of the prefix over
    /// the last 90 days with every reason (the file is the operator's), as `pgvigil report --html`
    /// writes it: each over its own window, every record read once.
    ///
    /// # Errors
    /// Storage errors.
    pub async fn report(
        &self,
        days: u32,
        policy: &EffectivePolicy,
        page: bool,
        cancel: &CancellationToken,
    ) -> Result<(Report, Option<String>), OperatorError> {
        let now = Utc::now();
        // Each its own window, through one cache: a record is read once even when both need it.
        let mut cache = RecordCache::default();
        let since = |days: u32| now - chrono::Duration::days(i64::from(days));
        let st = self.storage.as_ref();
        let t = Timeline::load(st, &self.layout, since(days), &mut cache, cancel).await?;
        let report = report::compute(&ReportInput::from_timeline(&t, now, days, self.report_settings(policy)));
        let page = match page {
            false => None,
            true => {
                let t = Timeline::load(st, &self.layout, since(WINDOWS[1]), &mut cache, cancel).await?;
                Some(self.page_of(&t, policy, now))
            }
        };
        Ok((report, page))
    }

    fn page_of(&self, t: &Timeline, policy: &EffectivePolicy, now: chrono::DateTime<Utc>) -> String {
        let db = Database {
            name: self.layout.prefix().to_string(),
            timeline: Some(t),
            error: None,
            backup_interval: policy.backup_interval,
            verify_interval: policy.verify_interval,
            report: self.report_settings(policy),
            live_problems: Vec::new(),
        };
        page::render(&Page {
            heading: format!("pgvigil report: {}", self.layout.prefix()),
            now,
            refresh_secs: None,
            details: true,
            docs: "",
            databases: vec![db],
        })
    }
}
