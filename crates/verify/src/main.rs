//! `pgvigil-verify`: restores a backup into a scratch database every `VERIFY_INTERVAL` (or once
//! with `--once`) and proves it is good.

use pgvigil_core::infra::config::Role;

fn main() -> std::process::ExitCode {
    pgvigil_core::service::binary::main(
        Role::Verify,
        "pgvigil-verify",
        "Restores backups from S3 (or BACKUP_DIR) into scratch databases and checks them. Configured by environment variables; see docs/configuration.md.",
    )
}
