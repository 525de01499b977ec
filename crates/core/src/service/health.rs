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

/// Counters and timestamps shared between the runner and the HTTP endpoint.
#[derive(Debug, Clone)]
pub struct Health {
    /// Shared state.
    inner: Arc<Mutex<HealthState>>,
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
        }
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
    /// verification failed; the reasons when not.
    pub fn verdict(&self) -> (bool, Vec<String>) {
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

    /// Prometheus text exposition.
    pub fn metrics(&self, service: &str) -> String {
        let verification = self.with(|s| {
            s.last_verification.as_ref().map(|LastVerdict { failure, at, .. }| {
                format!(
                    "# TYPE pgvigil_last_verification_passed gauge\npgvigil_last_verification_passed{{service=\"{service}\"}} {}\n# TYPE pgvigil_last_verification_timestamp_seconds gauge\npgvigil_last_verification_timestamp_seconds{{service=\"{service}\"}} {}\n",
                    u8::from(failure.is_none()),
                    at.timestamp()
                )
            })
        });
        self.counters(service) + &verification.unwrap_or_default()
    }

    fn counters(&self, service: &str) -> String {
        self.with(|s| {
            let ts = |t: Option<DateTime<Utc>>| t.map_or(0, |t| t.timestamp());
            format!(
                "# TYPE pgvigil_runs_total counter\npgvigil_runs_total{{service=\"{service}\",result=\"success\"}} {}\npgvigil_runs_total{{service=\"{service}\",result=\"failure\"}} {}\n# TYPE pgvigil_consecutive_failures gauge\npgvigil_consecutive_failures{{service=\"{service}\"}} {}\n# TYPE pgvigil_last_success_timestamp_seconds gauge\npgvigil_last_success_timestamp_seconds{{service=\"{service}\"}} {}\n# TYPE pgvigil_last_failure_timestamp_seconds gauge\npgvigil_last_failure_timestamp_seconds{{service=\"{service}\"}} {}\n",
                s.successes, s.failures, s.consecutive_failures, ts(s.last_success), ts(s.last_failure)
            )
        })
    }
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
}
