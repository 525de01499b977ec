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
    /// writes it: both from one load of the records.
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
        let window = if page { days.max(WINDOWS[1]) } else { days };
        let since = now - chrono::Duration::days(i64::from(window));
        let t = Timeline::load(self.storage.as_ref(), &self.layout, since, &mut RecordCache::default(), cancel).await?;
        let report = report::compute(&ReportInput::from_timeline(&t, now, days, self.report_settings(policy)));
        Ok((report, page.then(|| self.page_of(&t, policy, now))))
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
