//! `pgvigil-backup`: takes a backup every `BACKUP_INTERVAL` (or once with `--once`).

use clap::Parser;
use pgvigil_core::config::Role;
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
    pgvigil_core::memory::tune_allocator();
    let args = Args::parse();
    pgvigil_core::daemon::service_main(Role::Backup, args.once).await
}
