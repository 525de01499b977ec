//! The tiny HTTP server of a daemon (see [`super::health`] for what it answers from):
//!
//! * `GET /healthz` — liveness: the process is up and serving. What Railway's deploy check,
//!   Docker's `HEALTHCHECK` and Kubernetes' liveness probe should call: a bad backup or an outage
//!   must not get the service restarted in a loop.
//! * `GET /status` — backup health, for uptime monitors: 503 with the reasons while runs keep
//!   failing, the last success is too old, or (verify service) the newest verification failed.
//! * `GET /metrics` — OpenMetrics text (see [`super::metrics`]).
//! * `GET /` — the status page for people (see [`super::page`]), and `GET /docs/<page>.md`, the
//!   docs pages it links to.
//!
//! With `HEALTH_TOKEN` set, everything but `/healthz` answers only requests that carry it, as
//! `Authorization: Bearer …` or, for a browser, as the password of HTTP Basic authentication (any
//! user name); `/healthz` stays open. `HEALTH_ADDRESS` chooses the address.
//!
//! And `--healthcheck`, its client for Docker's `HEALTHCHECK`.

use super::health::Health;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::get;
use axum::Router;
use pgvigil_core::infra::config::{HealthAccess, Role};
use secrecy::ExposeSecret;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Whether a request may read anything but `/healthz`: always without a token; with one, only
/// with `Authorization: Bearer <token>`, or Basic with the token as the password. The SHA-256
/// digests are compared, in constant time, so neither the token nor its length shows in timing.
fn allowed(access: &HealthAccess, headers: &HeaderMap) -> bool {
    use base64::Engine as _;
    use sha2::{Digest, Sha256};
    let Some(token) = &access.token else { return true };
    let header = headers.get("authorization").and_then(|v| v.to_str().ok()).unwrap_or("");
    let given = if let Some(bearer) = header.strip_prefix("Bearer ") {
        bearer.trim().as_bytes().to_vec()
    } else if let Some(basic) = header.strip_prefix("Basic ") {
        let decoded = base64::engine::general_purpose::STANDARD.decode(basic.trim()).unwrap_or_default();
        match decoded.iter().position(|b| *b == b':') {
            Some(i) => decoded[i + 1..].to_vec(),
            None => Vec::new(),
        }
    } else {
        Vec::new()
    };
    let (want, given) = (Sha256::digest(token.expose_secret().as_bytes()), Sha256::digest(&given));
    std::hint::black_box(want.iter().zip(given.iter()).fold(0u8, |acc, (a, b)| acc | (a ^ b))) == 0
}

const UNAUTHORIZED: (StatusCode, [(&str, &str); 1], &str) = (
    StatusCode::UNAUTHORIZED,
    [("www-authenticate", "Bearer")],
    "this endpoint needs HEALTH_TOKEN as Authorization: Bearer <token>\n",
);

/// A browser asks for the token as a password.
const UNAUTHORIZED_PAGE: (StatusCode, [(&str, &str); 2], &str) = (
    StatusCode::UNAUTHORIZED,
    [
        ("www-authenticate", "Basic realm=\"pgvigil\", charset=\"UTF-8\""),
        ("content-type", "text/plain; charset=utf-8"),
    ],
    "this page needs HEALTH_TOKEN: give it as the password (any user name)\n",
);

/// What the page may do: nothing but show itself (no script, no request, no frame around it).
const PAGE_HEADERS: [(&str, &str); 6] = [
    ("content-type", "text/html; charset=utf-8"),
    ("content-security-policy", pgvigil_core::view::page::CSP),
    ("x-frame-options", "DENY"),
    ("x-content-type-options", "nosniff"),
    ("referrer-policy", "no-referrer"),
    ("cache-control", "no-store"),
];

/// The state every handler sees.
type Shared = (Health, &'static str, HealthAccess, std::sync::Arc<super::page::Pages>);

/// Serves `/healthz`, `/status` and `/metrics` on `port` until `cancel` fires.
///
/// # Errors
/// When the port cannot be bound.
pub async fn serve(port: u16, access: HealthAccess, health: Health, role: Role, cancel: CancellationToken) -> std::io::Result<()> {
    let address = access.address;
    let service = role.name();
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
        .route(
            "/",
            get(|State(h): State<Shared>, headers: HeaderMap| async move {
                if !allowed(&h.2, &headers) {
                    return axum::response::IntoResponse::into_response(UNAUTHORIZED_PAGE);
                }
                let html = h.3.html(&h.0, h.1, h.2.token.is_some()).await;
                axum::response::IntoResponse::into_response((PAGE_HEADERS, html))
            }),
        )
        .route(
            "/docs/{page}",
            get(|State(h): State<Shared>, Path(page): Path<String>, headers: HeaderMap| async move {
                if !allowed(&h.2, &headers) {
                    return axum::response::IntoResponse::into_response(UNAUTHORIZED_PAGE);
                }
                match super::page::doc(&page) {
                    Some(text) => axum::response::IntoResponse::into_response((
                        [("content-type", "text/plain; charset=utf-8"), ("x-content-type-options", "nosniff")],
                        text,
                    )),
                    None => axum::response::IntoResponse::into_response((StatusCode::NOT_FOUND, "no such page\n")),
                }
            }),
        )
        .with_state((health, service, access, std::sync::Arc::default()));
    let listener = tokio::net::TcpListener::bind((address, port)).await?;
    tracing::info!(port, address = %address, "health endpoint listening on /healthz, /status, /metrics and the status page /");
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

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine as _;

    fn with(header: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("authorization", header.parse().unwrap());
        h
    }

    #[test]
    fn the_token_is_accepted_as_bearer_or_as_the_basic_password_only() {
        let access = HealthAccess {
            token: Some("s3cret-token-1234567890".to_string().into()),
            ..HealthAccess::default()
        };
        let basic = |s: &str| format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(s));
        for (header, ok) in [
            ("Bearer s3cret-token-1234567890".to_string(), true),
            ("Bearer  s3cret-token-1234567890 ".to_string(), true),
            (basic("ops:s3cret-token-1234567890"), true),
            (basic(":s3cret-token-1234567890"), true),
            (basic("s3cret-token-1234567890"), false),
            (basic("s3cret-token-1234567890:"), false),
            (basic("ops:s3cret-token-123456789"), false),
            ("Basic not-base64!".to_string(), false),
            ("Bearer s3cret-token-12345678901".to_string(), false),
            ("Bearer ".to_string(), false),
            ("s3cret-token-1234567890".to_string(), false),
        ] {
            assert_eq!(allowed(&access, &with(&header)), ok, "{header}");
        }
        assert!(!allowed(&access, &HeaderMap::new()));
        assert!(allowed(&HealthAccess::default(), &HeaderMap::new()), "no token: open");
    }
}
