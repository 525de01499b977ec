//! Logging setup: `RUST_LOG` filter (default `info`), text or JSON lines on stderr.

use crate::infra::config::LogFormat;
use tracing_subscriber::EnvFilter;

/// Installs the global subscriber. Safe to call once per process.
pub fn init(format: LogFormat) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,aws_config=warn,aws_smithy_runtime=warn,sqlx=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false);
    let _ = match format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Text => builder.with_ansi(false).try_init(),
    };
}

/// Reads `LOG_FORMAT` alone, for logging configuration errors before the rest is validated.
pub fn format_from_env() -> LogFormat {
    match std::env::var("LOG_FORMAT").map(|s| s.to_ascii_lowercase()).as_deref() {
        Ok("json") => LogFormat::Json,
        _ => LogFormat::Text,
    }
}
