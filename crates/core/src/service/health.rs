//! Health state of a daemon and the tiny HTTP server for `/healthz` and `/metrics`.

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

    /// Healthy unless 3+ runs in a row failed or the last success is too old.
    pub fn verdict(&self) -> (bool, String) {
        self.with(|s| {
            let reference = s.last_success.unwrap_or(s.started);
            let age = (Utc::now() - reference).to_std().unwrap_or_default();
            if s.consecutive_failures >= 3 {
                (false, format!("{} consecutive failed runs", s.consecutive_failures))
            } else if age > s.stale_after {
                (false, format!("no successful run for {}s", age.as_secs()))
            } else {
                (true, "ok".into())
            }
        })
    }

    /// Prometheus text exposition.
    pub fn metrics(&self, service: &str) -> String {
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
                let (ok, why) = h.0.verdict();
                (if ok { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE }, why)
            }),
        )
        .route(
            "/metrics",
            get(|State(h): State<(Health, &'static str)>| async move { h.0.metrics(h.1) }),
        )
        .with_state((health, service));
    let listener = tokio::net::TcpListener::bind(("0.0.0.0", port)).await?;
    tracing::info!(port, "health endpoint listening on /healthz and /metrics");
    axum::serve(listener, app)
        .with_graceful_shutdown(async move { cancel.cancelled().await })
        .await
}
