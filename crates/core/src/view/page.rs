//! The status page: per database, the verdict at a glance with its reasons, the newest backup and
//! verification, when the next backup is due, the last seven days' figures, charts over 30 and 90
//! days, and the latest runs. A pure function of what storage holds ([`Timeline`]) and of what the
//! running service knows (its own reasons for being unhealthy).
//!
//! Reasons that quote records (a failed verification's reasons, a failed backup's error) may quote
//! data; they are shown only when [`Page::details`] is set (the page is behind `HEALTH_TOKEN`, or
//! the operator wrote it with `pgvigil report --html`).

use super::html::{doc_link, esc, style, when};
use super::{series, tables};
use crate::policy::report::{self, Report, ReportInput, ReportSettings};
use crate::policy::status::{assess_status, Verdict};
use crate::records::history::{FailureRecord, VerificationRecord};
use crate::records::timeline::Timeline;
use chrono::{DateTime, Utc};
use std::fmt::Write as _;
use std::time::Duration;

/// What the page may do, also stated in the page itself for a copy read from a file: show
/// itself, with its inline style; no script, no request, no form.
pub const CSP: &str = "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'";

/// The windows the charts cover, in days.
pub const WINDOWS: [u32; 2] = [30, 90];
/// Days of the figures table (the weekly review).
pub const FIGURE_DAYS: u32 = 7;

/// Every docs section the page links to (`file#anchor`, relative to `docs/`); a test checks
/// each resolves.
pub const DOC_LINKS: &[&str] = &[
    "status-page.md#what-the-page-shows",
    "status-page.md#backup-size",
    "status-page.md#backup-duration",
    "status-page.md#verification-time-and-rto",
    "status-page.md#rpo",
    "status-page.md#storage-used",
    "runbooks.md#backup-service-down-or-failing",
    "runbooks.md#verification-failing",
    "runbooks.md#a-backup-is-missing-from-storage-backup_missing",
    "runbooks.md#emergency-restore",
    "alerts.md#alerts-what-pgvigil-tells-you-and-what-to-do",
];

/// One database's part of the page.
#[derive(Debug, Clone)]
pub struct Database<'a> {
    /// Its name (or the prefix, for a service that covers one database).
    pub name: String,
    /// What storage holds (`None`: it could not be read; [`Database::error`] says why).
    pub timeline: Option<&'a Timeline>,
    /// Why storage could not be read.
    pub error: Option<String>,
    /// `BACKUP_INTERVAL`.
    pub backup_interval: Duration,
    /// `VERIFY_INTERVAL`.
    pub verify_interval: Duration,
    /// Retention and price, stated beside the figures.
    pub report: ReportSettings,
    /// Why the running service calls itself unhealthy (empty: it does not, or nothing runs).
    pub live_problems: Vec<String>,
}

/// The whole page.
#[derive(Debug, Clone)]
pub struct Page<'a> {
    /// The first heading.
    pub heading: String,
    /// When it was rendered.
    pub now: DateTime<Utc>,
    /// Reload every this many seconds (`None`: a file, which does not).
    pub refresh_secs: Option<u32>,
    /// Show reasons that quote records.
    pub details: bool,
    /// Where docs links point (`/docs/` on a service, which serves them).
    pub docs: &'a str,
    /// One part per database.
    pub databases: Vec<Database<'a>>,
}

/// Healthy, warning or failing, from the Nagios-style verdict.
fn word(v: Verdict) -> &'static str {
    match v {
        Verdict::Ok => "healthy",
        Verdict::Warning => "warning",
        Verdict::Critical => "failing",
    }
}

/// A verification record as the page may show it.
pub(super) fn shown_verification(v: &VerificationRecord, details: bool) -> VerificationRecord {
    let mut v = v.clone();
    if !details && !v.reasons.is_empty() {
        v.reasons = vec![
            "the reasons are in its verification record (`pgvigil status` shows them; this page shows them when HEALTH_TOKEN is set)"
                .into(),
        ];
    }
    v
}

pub(super) fn shown_failure(f: &FailureRecord, details: bool) -> FailureRecord {
    let mut f = f.clone();
    if !details {
        f.error = "`pgvigil status` shows the cause (this page shows it when HEALTH_TOKEN is set)".into();
    }
    f
}

/// The verdict on one database and every problem behind it.
pub fn verdict(db: &Database, t: &Timeline, now: DateTime<Utc>, details: bool) -> (Verdict, Vec<String>) {
    let newest = t.catalog.newest_complete();
    let last_v = t.verifications.last().map(|v| shown_verification(v, details));
    let last_f = t.failures.last().map(|f| shown_failure(f, details));
    let (mut verdict, mut problems) = assess_status(
        now,
        newest,
        last_v.as_ref(),
        last_f.as_ref(),
        db.backup_interval,
        db.verify_interval,
    );
    for p in &db.live_problems {
        problems.push(format!("this service: {p}"));
        verdict = Verdict::Critical;
    }
    for (id, hold) in &t.holds {
        problems.push(hold.problem(*id));
        verdict = verdict.max(Verdict::Warning);
    }
    if let Some(v) = &t.newest_verification_unreadable {
        let name = v.key.rsplit('/').next().unwrap_or(&v.key);
        if v.passed == Some(false) {
            problems.push(format!("the newest verification failed ({name}); its record cannot be read"));
            verdict = Verdict::Critical;
        } else {
            problems.push(format!("the newest verification record ({name}) cannot be read"));
            verdict = verdict.max(Verdict::Warning);
        }
    }
    if let Some(w) = t.catalog.future_warning() {
        problems.push(w);
        verdict = verdict.max(Verdict::Warning);
    }
    if t.unreadable > 0 {
        problems.push(format!(
            "{} record(s) in storage could not be read; `pgvigil check` says more",
            t.unreadable
        ));
        verdict = verdict.max(Verdict::Warning);
    }
    (verdict, problems)
}

/// The weekly figures.
pub fn figures(db: &Database, t: &Timeline, now: DateTime<Utc>) -> Report {
    report::compute(&ReportInput::from_timeline(t, now, FIGURE_DAYS, db.report.clone()))
}

fn database(o: &mut String, n: usize, db: &Database, page: &Page) {
    let id = format!("db{n}");
    let docs = page.docs;
    let Some(t) = db.timeline else {
        let _ = write!(
            o,
            "<section id=\"{id}\" aria-labelledby=\"{id}-h\"><h2 id=\"{id}-h\">{} <span class=\"badge warning\">unknown</span></h2><ul class=\"problems warning\"><li>storage could not be read: {}</li></ul></section>",
            esc(&db.name),
            esc(db.error.as_deref().unwrap_or("no answer yet"))
        );
        return;
    };
    let (v, problems) = verdict(db, t, page.now, page.details);
    let w = word(v);
    let _ = write!(
        o,
        "<section id=\"{id}\" aria-labelledby=\"{id}-h\"><h2 id=\"{id}-h\">{} <span class=\"badge {w}\" data-verdict=\"{w}\">{w}</span></h2>",
        esc(&db.name)
    );
    if !problems.is_empty() {
        let _ = write!(o, "<ul class=\"problems {w}\" aria-label=\"Problems\">");
        for p in &problems {
            let _ = write!(o, "<li>{}</li>", esc(p));
        }
        let links: Vec<String> = [
            ("runbooks.md#backup-service-down-or-failing", "backup failing"),
            ("runbooks.md#verification-failing", "verification failing"),
            ("runbooks.md#a-backup-is-missing-from-storage-backup_missing", "a backup missing"),
            ("runbooks.md#emergency-restore", "emergency restore"),
        ]
        .iter()
        .map(|(target, text)| doc_link(docs, target, text))
        .collect();
        let _ = write!(o, "</ul><p class=\"muted\">What to do: {}</p>", links.join(" · "));
    }
    o.push_str(&tables::facts(db, t, page.now));
    let _ = write!(
        o,
        "<h3>Last {FIGURE_DAYS} days</h3>{}",
        tables::figures_table(&figures(db, t, page.now))
    );
    for (i, days) in WINDOWS.iter().enumerate() {
        let open = if i == 0 { " open" } else { "" };
        let _ = write!(o, "<details{open}><summary>Charts over {days} days</summary><div class=\"charts\">");
        for c in series::charts(t, &id, page.now, *days) {
            let key = c.id.rsplit('-').next().unwrap_or_default().to_string();
            let help = if docs.is_empty() {
                String::new()
            } else {
                format!(
                    " <a class=\"help\" href=\"{docs}{}\" aria-label=\"What {} means\">?</a>",
                    series::chart_doc(&key),
                    esc(&c.title)
                )
            };
            o.push_str(&c.render().replacen("</figcaption>", &format!("{help}</figcaption>"), 1));
        }
        o.push_str("</div></details>");
    }
    let _ = write!(o, "<h3>Latest runs</h3>{}</section>", tables::runs_table(t, page.details));
}

/// The page as HTML.
pub fn render(page: &Page) -> String {
    let mut o = String::with_capacity(64 * 1024);
    let refresh = page
        .refresh_secs
        .map(|s| format!("<meta http-equiv=\"refresh\" content=\"{s}\">"))
        .unwrap_or_default();
    let _ = write!(
        o,
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><meta http-equiv=\"Content-Security-Policy\" content=\"{CSP}\">{refresh}<title>{}</title><style>{}</style></head><body><header><h1>{}</h1><p class=\"muted\">Rendered {}{} · {}</p>",
        esc(&page.heading),
        style(),
        esc(&page.heading),
        when(page.now),
        page.refresh_secs.map(|s| format!(", refreshes every {s} seconds")).unwrap_or_default(),
        doc_link(page.docs, "status-page.md#what-the-page-shows", "what this page shows")
    );
    if page.databases.len() > 1 {
        o.push_str("<nav aria-label=\"Databases\"><ul>");
        for (n, db) in page.databases.iter().enumerate() {
            let _ = write!(o, "<li><a href=\"#db{n}\">{}</a></li>", esc(&db.name));
        }
        o.push_str("</ul></nav>");
    }
    o.push_str("</header><main>");
    if page.databases.is_empty() {
        o.push_str("<p>Nothing to show yet: the service has not opened its storage.</p>");
    }
    for (n, db) in page.databases.iter().enumerate() {
        database(&mut o, n, db, page);
    }
    let _ = writeln!(
        o,
        "</main><footer class=\"muted\"><p>pgvigil {} · {} · {}</p></footer></body></html>",
        env!("CARGO_PKG_VERSION"),
        doc_link(page.docs, "alerts.md#alerts-what-pgvigil-tells-you-and-what-to-do", "alerts"),
        doc_link(page.docs, "runbooks.md#emergency-restore", "emergency restore")
    );
    o
}

#[cfg(test)]
#[path = "page_tests.rs"]
mod tests;
