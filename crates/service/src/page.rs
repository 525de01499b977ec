//! The status page a service serves on `/` (rendered by [`pgvigil_core::view::page`]): what storage holds
//! about each database it covers, read through a [`RecordCache`] so that a page refreshed every
//! minute reads only the records written since, and rendered at most every [`FRESH`] whatever the
//! number of viewers. A store that does not answer within [`LOAD_TIMEOUT`] shows as an error on
//! the page; it never holds the endpoint.

use super::health::Health;
use chrono::Utc;
use pgvigil_core::infra::config::{Role, Settings};
use pgvigil_core::infra::storage::DynStorage;
use pgvigil_core::policy::report::ReportSettings;
use pgvigil_core::records::keys::Layout;
use pgvigil_core::records::policy;
use pgvigil_core::records::timeline::{RecordCache, Timeline};
use pgvigil_core::view::page::{self as view, Database, Page};
use std::collections::HashMap;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// A rendered page is served again for this long.
pub const FRESH: Duration = Duration::from_secs(30);
/// The most one database's records may take to load.
pub const LOAD_TIMEOUT: Duration = Duration::from_secs(20);
/// Browsers reload the page this often.
pub const REFRESH_SECS: u32 = 60;

/// Where the page reads one database's records from, and the settings it judges them by.
#[derive(Clone)]
pub struct Feed {
    storage: DynStorage,
    layout: Layout,
    /// The service that serves the page: its own interval is the one it runs by; the other
    /// service's comes from that service's record.
    role: Role,
    backup_interval: Duration,
    verify_interval: Duration,
    report: ReportSettings,
}

impl std::fmt::Debug for Feed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Feed")
            .field("prefix", &self.layout.prefix())
            .finish_non_exhaustive()
    }
}

impl Feed {
    /// The feed of the `role` service's storage under `layout`, judged by `settings`.
    pub fn new(storage: DynStorage, layout: Layout, settings: &Settings, role: Role) -> Self {
        Self {
            storage,
            layout,
            role,
            backup_interval: settings.backup.interval,
            verify_interval: settings.verify.interval,
            report: ReportSettings {
                retention_days: settings.backup.retention.retention_days,
                calendar: settings.backup.retention.calendar.describe(),
                price_per_gb_month: settings.price_per_gb_month,
            },
        }
    }

    /// The prefix, which names the database of a service that covers one.
    pub fn prefix(&self) -> &str {
        self.layout.prefix()
    }

    /// This database's part of the page, judged by this service's settings and, for what the
    /// other service decides, by that service's record (when it is sensible; records are untrusted).
    async fn database(
        &self,
        name: String,
        live_problems: Vec<String>,
        cache: &mut RecordCache,
        cancel: &CancellationToken,
    ) -> (Database<'static>, Result<Timeline, String>) {
        let st = self.storage.as_ref();
        let mut db = Database {
            backup_interval: self.backup_interval,
            verify_interval: self.verify_interval,
            report: self.report.clone(),
            ..placeholder(name, live_problems)
        };
        let sensible = |secs: u64| (60..=31 * 86_400).contains(&secs).then(|| Duration::from_secs(secs));
        if self.role == Role::Verify {
            if let Ok(Some(b)) = policy::read_backup(st, &self.layout, cancel).await {
                db.backup_interval = sensible(b.interval_secs).unwrap_or(db.backup_interval);
                if (1..=36_500).contains(&b.retention_days) {
                    db.report.retention_days = b.retention_days;
                }
            }
        } else if let Ok(Some(v)) = policy::read_verify(st, &self.layout, cancel).await {
            db.verify_interval = sensible(v.interval_secs).unwrap_or(db.verify_interval);
        }
        let since = Utc::now() - chrono::Duration::days(i64::from(view::WINDOWS[1]));
        let loaded = Timeline::load(st, &self.layout, since, cache, cancel)
            .await
            .map_err(|e| e.to_string());
        (db, loaded)
    }
}

/// The last page rendered: when, whether with details, and the page.
type Rendered = Option<(Instant, bool, String)>;

/// The page of one service, rendered on demand and kept for [`FRESH`].
#[derive(Default)]
pub struct Pages {
    /// The last page rendered.
    rendered: std::sync::Mutex<Rendered>,
    /// Records read so far, per database; held while a page is being made.
    caches: tokio::sync::Mutex<HashMap<String, RecordCache>>,
}

impl Pages {
    fn last(&self, details: bool, fresh: bool) -> Option<String> {
        let last = self.rendered.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        last.as_ref()
            .filter(|(at, d, _)| *d == details && (!fresh || at.elapsed() < FRESH))
            .map(|(_, _, html)| html.clone())
    }

    /// The page as HTML. `details`: the request carried the token, so reasons that may quote data
    /// are shown. While another request is making a new page, the last one is served.
    pub async fn html(&self, health: &Health, service: &str, details: bool) -> String {
        if let Some(html) = self.last(details, true) {
            return html;
        }
        let mut caches = match self.caches.try_lock() {
            Ok(c) => c,
            Err(_) => match self.last(details, false) {
                Some(stale) => return stale,
                None => self.caches.lock().await,
            },
        };
        let cancel = CancellationToken::new();
        let deadline = tokio::time::Instant::now() + LOAD_TIMEOUT;
        let mut parts = Vec::new();
        for (name, feed, live_problems) in health.feeds() {
            let Some(feed) = feed else {
                parts.push((
                    placeholder(name, live_problems),
                    Err("the service has not opened its storage yet".into()),
                ));
                continue;
            };
            let cache = caches.entry(name.clone()).or_default();
            let part = tokio::time::timeout_at(deadline, feed.database(name.clone(), live_problems.clone(), cache, &cancel)).await;
            parts.push(part.unwrap_or_else(|_| {
                (
                    placeholder(name, live_problems),
                    Err(format!(
                        "storage did not answer within {}s (what was read is kept; the next load goes on from there)",
                        LOAD_TIMEOUT.as_secs()
                    )),
                )
            }));
        }
        drop(caches);
        let databases = parts
            .iter()
            .map(|(db, loaded)| match loaded {
                Ok(t) => Database {
                    timeline: Some(t),
                    ..db.clone()
                },
                Err(e) => Database {
                    error: Some(e.clone()),
                    ..db.clone()
                },
            })
            .collect();
        let html = view::render(&Page {
            heading: format!("pgvigil {service} service"),
            now: Utc::now(),
            refresh_secs: Some(REFRESH_SECS),
            details,
            docs: "/docs/",
            databases,
        });
        *self.rendered.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some((Instant::now(), details, html.clone()));
        html
    }
}

/// A database part with nothing loaded.
fn placeholder(name: String, live_problems: Vec<String>) -> Database<'static> {
    Database {
        name,
        timeline: None,
        error: None,
        backup_interval: Duration::from_secs(3600),
        verify_interval: Duration::from_secs(3600),
        report: ReportSettings::default(),
        live_problems,
    }
}

/// The docs pages the status page links to, served as text by the service itself (it may be the
/// only thing an operator can reach).
pub fn doc(name: &str) -> Option<&'static str> {
    match name {
        "status-page.md" => Some(include_str!("../../../docs/status-page.md")),
        "runbooks.md" => Some(include_str!("../../../docs/runbooks.md")),
        "alerts.md" => Some(include_str!("../../../docs/alerts.md")),
        _ => None,
    }
}
