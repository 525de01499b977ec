//! `pgvigil-backup`: takes a backup every `BACKUP_INTERVAL` (or once with `--once`).

use pgvigil_core::infra::config::Role;

fn main() -> std::process::ExitCode {
    pgvigil_core::service::binary::main(
        Role::Backup,
        "pgvigil-backup",
        "Streams pg_dump → gzip → S3 (or BACKUP_DIR) on a schedule. Configured by environment variables; see docs/configuration.md.",
    )
}
