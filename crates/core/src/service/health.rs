//! Health state of a daemon and the tiny HTTP server for it:
//!
//! * `GET /healthz` — liveness: the process is up and serving. What Railway's deploy check,
//!   Docker's `HEALTHCHECK` and Kubernetes' liveness probe should call: a bad backup or an outage
//!   must not get the service restarted in a loop.
//! * `GET /status` — backup health, for uptime monitors: 503 with the reasons while runs keep
//!   failing, the last success is too old, or (verify service) the newest verification failed.
//! * `GET /metrics` — Prometheus text.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use chrono::{DateTime, Utc};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Counters and timestamps shared between the runner and the HTTP endpoint. A service that covers
/// several databases has one part per database ([`Health::part`]); the endpoint then answers for
/// all of them, naming the database in every reason and labelling every metric with it.
#[derive(Debug, Clone)]
pub struct Health {
    /// Shared state.
    inner: Arc<Mutex<HealthState>>,
    /// Per-database parts, when there are several.
    parts: Arc<Mutex<Vec<(String, Health)>>>,
}

#[derive(Debug)]
struct HealthState {
    started: DateTime<Utc>,
    last_success: Option<DateTime<Utc>>,
    last_failure: Option<DateTime<Utc>>,
    consecutive_failures: u32,
    successes: u64,
    failures: u64,
    /// Unhealthy when the last success is older than this.
    stale_after: Duration,
    /// The verdict on the newest backup verified so far. A drill of an older backup never hides it.
    last_verification: Option<LastVerdict>,
}

/// A verification's verdict, as health needs it.
#[derive(Debug)]
struct LastVerdict {
    /// When the backup was taken.
    backup_time: DateTime<Utc>,
    /// Its key.
    key: String,
    /// Why it failed (`None`: it passed).
    failure: Option<String>,
    /// When the verdict was reached.
    at: DateTime<Utc>,
}

impl Health {
    /// New state; `stale_after` is typically twice the interval plus slack.
    pub fn new(stale_after: Duration) -> Self {
        Self {
            inner: Arc::new(Mutex::new(HealthState {
                started: Utc::now(),
                last_success: None,
                last_failure: None,
                consecutive_failures: 0,
                successes: 0,
                failures: 0,
                stale_after,
                last_verification: None,
            })),
            parts: Arc::default(),
        }
    }

    /// A part of this health for one database (its runs and verdicts are reported there).
    pub fn part(&self, database: &str) -> Health {
        let stale_after = self.with(|s| s.stale_after);
        let part = Health::new(stale_after);
        self.parts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push((database.to_string(), part.clone()));
        part
    }

    fn parts(&self) -> Vec<(String, Health)> {
        self.parts.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    fn with<T>(&self, f: impl FnOnce(&mut HealthState) -> T) -> T {
        let mut g = self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        f(&mut g)
    }

    /// Records a successful run.
    pub fn record_success(&self) {
        self.with(|s| {
            s.last_success = Some(Utc::now());
            s.consecutive_failures = 0;
            s.successes += 1;
        });
    }

    /// Records a failed run.
    pub fn record_failure(&self) {
        self.with(|s| {
            s.last_failure = Some(Utc::now());
            s.consecutive_failures += 1;
            s.failures += 1;
        });
    }

    /// Records a verification's verdict on the backup taken at `backup_time` (`failure`: why it
    /// failed). Only the newest backup's verdict counts: a drill of an older one that passes does
    /// not turn a failed newest backup green.
    pub fn record_verification(&self, backup_time: DateTime<Utc>, key: &str, failure: Option<String>) {
        self.with(|s| {
            if s.last_verification.as_ref().is_none_or(|v| backup_time >= v.backup_time) {
                s.last_verification = Some(LastVerdict {
                    backup_time,
                    key: key.to_string(),
                    failure,
                    at: Utc::now(),
                });
            }
        });
    }

    /// Healthy unless 3+ runs in a row failed, the last success is too old, or the newest
    /// verification failed — for any database, when there are several; the reasons when not.
    pub fn verdict(&self) -> (bool, Vec<String>) {
        let parts = self.parts();
        if !parts.is_empty() {
            let reasons: Vec<String> = parts
                .iter()
                .flat_map(|(db, h)| h.own_verdict().1.into_iter().map(move |r| format!("database {db}: {r}")))
                .collect();
            return (reasons.is_empty(), reasons);
        }
        self.own_verdict()
    }

    fn own_verdict(&self) -> (bool, Vec<String>) {
        self.with(|s| {
            let reference = s.last_success.unwrap_or(s.started);
            let age = (Utc::now() - reference).to_std().unwrap_or_default();
            let mut reasons = Vec::new();
            if s.consecutive_failures >= 3 {
                reasons.push(format!("{} consecutive failed runs", s.consecutive_failures));
            }
            if age > s.stale_after {
                reasons.push(format!("no successful run for {}s", age.as_secs()));
            }
            if let Some(LastVerdict { key, failure: Some(_), .. }) = &s.last_verification {
                // The reasons themselves (which may quote data) stay in the record.
                reasons.push(format!(
                    "the newest backup failed verification ({key}); `pgvigil status` and its verification record say why"
                ));
            }
            (reasons.is_empty(), reasons)
        })
    }

    /// Prometheus text exposition (each metric family once, a sample per database when there
    /// are several).
    pub fn metrics(&self, service: &str) -> String {
        let parts = self.parts();
        let samples: Vec<(String, Vec<Sample>)> = if parts.is_empty() {
            vec![(format!("service=\"{service}\""), self.samples())]
        } else {
            parts
                .iter()
                .map(|(db, h)| (format!("service=\"{service}\",database=\"{}\"", escape(db)), h.samples()))
                .collect()
        };
        let mut families: Vec<(&'static str, &'static str)> = Vec::new();
        for (_, list) in &samples {
            for s in list {
                if !families.iter().any(|f| f.0 == s.name) {
                    families.push((s.name, s.kind));
                }
            }
        }
        let mut out = String::new();
        for (name, kind) in families {
            out.push_str(&format!("# TYPE {name} {kind}\n"));
            for (labels, list) in &samples {
                for s in list.iter().filter(|s| s.name == name) {
                    let extra = s.label.map(|(k, v)| format!(",{k}=\"{v}\"")).unwrap_or_default();
                    out.push_str(&format!("{name}{{{labels}{extra}}} {}\n", s.value));
                }
            }
        }
        out
    }

    fn samples(&self) -> Vec<Sample> {
        self.with(|s| {
            let ts = |t: Option<DateTime<Utc>>| t.map_or(0, |t| t.timestamp());
            let mut v = vec![
                Sample::new("pgvigil_runs_total", "counter", s.successes as i64).with_label(("result", "success")),
                Sample::new("pgvigil_runs_total", "counter", s.failures as i64).with_label(("result", "failure")),
                Sample::new("pgvigil_consecutive_failures", "gauge", i64::from(s.consecutive_failures)),
                Sample::new("pgvigil_last_success_timestamp_seconds", "gauge", ts(s.last_success)),
                Sample::new("pgvigil_last_failure_timestamp_seconds", "gauge", ts(s.last_failure)),
            ];
            if let Some(LastVerdict { failure, at, .. }) = &s.last_verification {
                v.push(Sample::new(
                    "pgvigil_last_verification_passed",
                    "gauge",
                    i64::from(failure.is_none()),
                ));
                v.push(Sample::new("pgvigil_last_verification_timestamp_seconds", "gauge", at.timestamp()));
            }
            v
        })
    }
}

/// One metric sample.
struct Sample {
    name: &'static str,
    kind: &'static str,
    value: i64,
    label: Option<(&'static str, &'static str)>,
}

impl Sample {
    fn new(name: &'static str, kind: &'static str, value: i64) -> Self {
        Self {
            name,
            kind,
            value,
            label: None,
        }
    }

    fn with_label(mut self, label: (&'static str, &'static str)) -> Self {
        self.label = Some(label);
        self
    }
}

/// A label value as Prometheus' text format needs it.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// Serves `/healthz` and `/metrics` on `port` until `cancel` fires.
///
/// # Errors
/// When the port cannot be bound.
pub async fn serve(port: u16, health: Health, service: &'static str, cancel: CancellationToken) -> std::io::Result<()> {
    let app = Router::new()
        .route(
            "/healthz",
            get(|State(h): State<(Health, &'static str)>| async move {
                let body = serde_json::json!({ "status": "alive", "service": h.1 });
                (StatusCode::OK, [("content-type", "application/json")], body.to_string())
            }),
        )
        .route(
            "/status",
            get(|State(h): State<(Health, &'static str)>| async move {
                let (ok, reasons) = h.0.verdict();
                let body = serde_json::json!({
                    "status": if ok { "healthy" } else { "unhealthy" },
                    "service": h.1,
                    "reasons": reasons,
                });
                let code = if ok { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
                (code, [("content-type", "application/json")], body.to_string())
            }),
        )
        .route(
            "/metrics",
            get(|State(h): State<(Health, &'static str)>| async move { h.0.metrics(h.1) }),
        )
        .with_state((health, service));
    let listener = tokio::net::TcpListener::bind(("0.0.0.0", port)).await?;
    tracing::info!(port, "health endpoint listening on /healthz, /status and /metrics");
    axum::serve(listener, app)
        .with_graceful_shutdown(async move { cancel.cancelled().await })
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_passing_drill_of_an_older_backup_does_not_hide_a_failed_newest_one() {
        let h = Health::new(Duration::from_secs(3600));
        let newest = Utc::now();
        let older = newest - chrono::Duration::hours(6);
        h.record_verification(newest, "p/new", Some("SHA-256 differs".into()));
        h.record_verification(older, "p/old", None);
        let (ok, reasons) = h.verdict();
        assert!(!ok && reasons[0].contains("p/new"), "{reasons:?}");
        assert!(!reasons[0].contains("SHA-256"), "reasons stay in the record");
        assert!(h
            .metrics("verify")
            .contains("pgvigil_last_verification_passed{service=\"verify\"} 0"));
        // A newer backup that passes clears it.
        h.record_verification(newest + chrono::Duration::hours(1), "p/newer", None);
        assert!(h.verdict().0);
    }

    #[test]
    fn one_failing_database_is_not_hidden_by_the_others() {
        let group = Health::new(Duration::from_secs(3600));
        let (a, b) = (group.part("app"), group.part("bill\"ing"));
        for _ in 0..3 {
            b.record_failure();
            a.record_success();
        }
        let (ok, reasons) = group.verdict();
        assert!(
            !ok && reasons.len() == 1 && reasons[0].starts_with("database bill\"ing: 3 consecutive"),
            "{reasons:?}"
        );
        let m = group.metrics("backup");
        assert_eq!(m.matches("# TYPE pgvigil_runs_total counter").count(), 1, "{m}");
        assert!(
            m.contains("pgvigil_consecutive_failures{service=\"backup\",database=\"bill\\\"ing\"} 3"),
            "{m}"
        );
        assert!(
            m.contains("pgvigil_runs_total{service=\"backup\",database=\"app\",result=\"success\"} 3"),
            "{m}"
        );
    }
}
