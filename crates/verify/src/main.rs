//! `pgvigil-verify`: restores a backup into a scratch database every `VERIFY_INTERVAL` (or once
//! with `--once`) and proves it is good.

use clap::Parser;
use pgvigil_core::infra::config::Role;
use pgvigil_service::ServiceArgs;

/// The command line of `pgvigil-verify`: everything else comes from the environment.
#[derive(Parser, Debug)]
#[command(
    name = "pgvigil-verify",
    version,
    about = "Restores backups from S3 (or BACKUP_DIR) into scratch databases and checks them. Configured by environment variables; see docs/configuration.md."
)]
struct Args {
    #[command(flatten)]
    service: ServiceArgs,
}

fn main() -> std::process::ExitCode {
    pgvigil_core::infra::process::prepare();
    pgvigil_service::run(Role::Verify, Args::parse().service)
}
