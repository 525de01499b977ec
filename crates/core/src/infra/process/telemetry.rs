//! Logging setup: `RUST_LOG` filter (default `info`, the SDKs' chatter at `warn`), text or JSON lines on stderr.

use crate::infra::config::LogFormat;
use tracing_subscriber::EnvFilter;

/// Installs the global subscriber. Safe to call once per process.
pub fn init(format: LogFormat) {
    let given = std::env::var("RUST_LOG").ok().filter(|v| !v.trim().is_empty());
    let parsed = given.as_deref().map(EnvFilter::try_new);
    let unusable = matches!(parsed, Some(Err(_)));
    let filter = match parsed {
        Some(Ok(filter)) => filter,
        _ => EnvFilter::new(DEFAULT_FILTER),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false);
    let _ = match format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Text => builder.with_ansi(false).try_init(),
    };
    if unusable {
        tracing::warn!("RUST_LOG is not a log filter (e.g. info or info,pgvigil_core=debug); using the default, {DEFAULT_FILTER}");
    }
}

/// The filter when `RUST_LOG` is unset or unusable.
const DEFAULT_FILTER: &str = "info,aws_config=warn,aws_smithy_runtime=warn,sqlx=warn";

/// Reads `LOG_FORMAT` alone, for logging configuration errors before the rest is validated.
pub fn format_from_env() -> LogFormat {
    match std::env::var("LOG_FORMAT").map(|s| s.to_ascii_lowercase()).as_deref() {
        Ok("json") => LogFormat::Json,
        _ => LogFormat::Text,
    }
}
