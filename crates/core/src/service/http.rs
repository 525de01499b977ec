//! The tiny HTTP server of a daemon (see [`super::health`] for what it answers from):
//!
//! * `GET /healthz` — liveness: the process is up and serving. What Railway's deploy check,
//!   Docker's `HEALTHCHECK` and Kubernetes' liveness probe should call: a bad backup or an outage
//!   must not get the service restarted in a loop.
//! * `GET /status` — backup health, for uptime monitors: 503 with the reasons while runs keep
//!   failing, the last success is too old, or (verify service) the newest verification failed.
//! * `GET /metrics` — OpenMetrics text (see [`super::metrics`]).
//!
//! With `HEALTH_TOKEN` set, `/status` and `/metrics` answer only requests that carry it
//! (`Authorization: Bearer …`); `/healthz` stays open. `HEALTH_ADDRESS` chooses the address.
//!
//! And `--healthcheck`, its client for Docker's `HEALTHCHECK`.

use super::health::Health;
use crate::infra::config::HealthAccess;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::get;
use axum::Router;
use secrecy::ExposeSecret;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Whether a request may read `/status` and `/metrics`: always without a token; with one, only
/// with `Authorization: Bearer <token>` (compared in constant time).
fn allowed(access: &HealthAccess, headers: &HeaderMap) -> bool {
    let Some(token) = &access.token else { return true };
    let given = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    let want = token.expose_secret().as_bytes();
    let given = given.trim().as_bytes();
    given.len() == want.len() && given.iter().zip(want).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
}

const UNAUTHORIZED: (StatusCode, [(&str, &str); 1], &str) = (
    StatusCode::UNAUTHORIZED,
    [("www-authenticate", "Bearer")],
    "this endpoint needs HEALTH_TOKEN as Authorization: Bearer <token>\n",
);

/// The state every handler sees.
type Shared = (Health, &'static str, HealthAccess);

/// Serves `/healthz`, `/status` and `/metrics` on `port` until `cancel` fires.
///
/// # Errors
/// When the port cannot be bound.
pub async fn serve(
    port: u16,
    access: HealthAccess,
    health: Health,
    service: &'static str,
    cancel: CancellationToken,
) -> std::io::Result<()> {
    let address = access.address;
    let app = Router::new()
        .route(
            "/healthz",
            get(|State(h): State<Shared>| async move {
                let body = serde_json::json!({ "status": "alive", "service": h.1 });
                (StatusCode::OK, [("content-type", "application/json")], body.to_string())
            }),
        )
        .route(
            "/status",
            get(|State(h): State<Shared>, headers: HeaderMap| async move {
                if !allowed(&h.2, &headers) {
                    return axum::response::IntoResponse::into_response(UNAUTHORIZED);
                }
                let (ok, reasons) = h.0.verdict();
                let body = serde_json::json!({
                    "status": if ok { "healthy" } else { "unhealthy" },
                    "service": h.1,
                    "reasons": reasons,
                });
                let code = if ok { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
                axum::response::IntoResponse::into_response((code, [("content-type", "application/json")], body.to_string()))
            }),
        )
        .route(
            "/metrics",
            get(|State(h): State<Shared>, headers: HeaderMap| async move {
                if !allowed(&h.2, &headers) {
                    return axum::response::IntoResponse::into_response(UNAUTHORIZED);
                }
                axum::response::IntoResponse::into_response((
                    [("content-type", "application/openmetrics-text; version=1.0.0; charset=utf-8")],
                    h.0.metrics(),
                ))
            }),
        )
        .with_state((health, service, access));
    let listener = tokio::net::TcpListener::bind((address, port)).await?;
    tracing::info!(port, address = %address, "health endpoint listening on /healthz, /status and /metrics");
    axum::serve(listener, app)
        .with_graceful_shutdown(async move { cancel.cancelled().await })
        .await
}

/// `--healthcheck`: liveness of the service listening on `PORT` on this machine.
pub async fn probe() -> std::process::ExitCode {
    let Some(port) = std::env::var("PORT").ok().and_then(|p| p.trim().parse::<u16>().ok()) else {
        eprintln!("PORT is not set: the health endpoint is off");
        return std::process::ExitCode::FAILURE;
    };
    let client = reqwest::Client::builder().timeout(Duration::from_secs(5)).build();
    let alive = match client {
        Ok(c) => c
            .get(format!("http://127.0.0.1:{port}/healthz"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success()),
        Err(_) => false,
    };
    if alive {
        std::process::ExitCode::SUCCESS
    } else {
        eprintln!("no answer from http://127.0.0.1:{port}/healthz");
        std::process::ExitCode::FAILURE
    }
}
