//! `pgvigil-backup`: takes a backup every `BACKUP_INTERVAL` (or once with `--once`).

use clap::Parser;
use pgvigil_core::infra::config::Role;
use pgvigil_service::ServiceArgs;

/// The command line of `pgvigil-backup`: everything else comes from the environment.
#[derive(Parser, Debug)]
#[command(
    name = "pgvigil-backup",
    version,
    about = "Streams pg_dump → gzip → S3 (or BACKUP_DIR) on a schedule. Configured by environment variables; see docs/configuration.md."
)]
struct Args {
    #[command(flatten)]
    service: ServiceArgs,
}

fn main() -> std::process::ExitCode {
    pgvigil_core::infra::process::prepare();
    pgvigil_service::run(Role::Backup, Args::parse().service)
}
