//! `pgvigil`: the operator CLI. Same environment as the services; human tables by default,
//! `--json` for scripts, exit codes for cron jobs and uptime checkers.

mod commands;
mod progress;
mod restore;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

/// Operator commands for pgvigil backups (configured like the services: see docs/configuration.md).
#[derive(Parser, Debug)]
#[command(version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Newest backup and verification, next backup due, and a verdict (exit 0 OK, 1 WARNING, 2 CRITICAL).
    Status {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Backups, newest first: time, size, change vs the recent median, verified or not.
    List {
        /// How many backups to show.
        #[arg(long, default_value_t = 20)]
        limit: usize,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Take one backup now, through the same code path as the service (needs DATABASE_URL).
    BackupNow,
    /// Restore a backup into a database, falling back to older backups if it fails.
    Restore(restore::RestoreArgs),
    /// Check the integrity of the last N backups without restoring them (exit 1 if the newest is bad).
    Check {
        /// How many backups to check, newest first.
        #[arg(long, default_value_t = 5)]
        last: usize,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Apply retention now (BACKUP_RETENTION_DAYS, BACKUP_MIN_KEEP), printing the plan first.
    Prune {
        /// Only print what would be deleted.
        #[arg(long)]
        dry_run: bool,
    },
    /// The weekly review: backups, verification success rate, durations, sizes, storage and cost.
    Report {
        /// Window in days.
        #[arg(long, default_value_t = 7)]
        days: u32,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    pgvigil_core::memory::tune_allocator();
    let cli = Cli::parse();
    pgvigil_core::telemetry::init(pgvigil_core::telemetry::format_from_env());
    let cancel = pgvigil_core::shutdown::on_signals();
    let result = match cli.command {
        Command::Status { json } => commands::status(json).await,
        Command::List { limit, json } => commands::list(limit, json).await,
        Command::BackupNow => commands::backup_now(&cancel).await,
        Command::Restore(args) => restore::run(args, &cancel).await,
        Command::Check { last, json } => commands::check(last, json, &cancel).await,
        Command::Prune { dry_run } => commands::prune(dry_run).await,
        Command::Report { days, json } => commands::report(days, json).await,
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(if e.downcast_ref::<pgvigil_core::config::ConfigError>().is_some() {
                2
            } else {
                1
            })
        }
    }
}
