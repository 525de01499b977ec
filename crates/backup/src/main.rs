//! `pgvigil-backup`: takes a backup every `BACKUP_INTERVAL` (or once with `--once`).

use clap::Parser;
use pgvigil_core::config::{Role, Settings};
use pgvigil_core::{daemon, shutdown, telemetry};
use std::process::ExitCode;

/// Streams pg_dump → gzip → S3 (or BACKUP_DIR) on a schedule. Configured by environment
/// variables; see docs/configuration.md.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Take one backup now and exit: status 0 on success, 1 with the cause otherwise.
    #[arg(long)]
    once: bool,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    telemetry::init(telemetry::format_from_env());
    let settings = match Settings::from_env(Role::Backup) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!("{e}");
            return ExitCode::from(2);
        }
    };
    let cancel = shutdown::on_signals();
    match daemon::run_backup_service(settings, args.once, cancel).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            ExitCode::FAILURE
        }
    }
}
