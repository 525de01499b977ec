//! `pgvigil-verify`: restores a backup into a scratch database every `VERIFY_INTERVAL` (or once
//! with `--once`) and proves it is good.

use clap::Parser;
use pgvigil_core::config::Role;
use std::process::ExitCode;

/// Restores backups from S3 (or BACKUP_DIR) into scratch databases and checks them. Configured by
/// environment variables; see docs/configuration.md.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Verify one backup now and exit: status 0 when it passed, 1 when it failed or could not run.
    #[arg(long)]
    once: bool,
}

#[tokio::main]
async fn main() -> ExitCode {
    pgvigil_core::memory::tune_allocator();
    let args = Args::parse();
    pgvigil_core::daemon::service_main(Role::Verify, args.once).await
}
