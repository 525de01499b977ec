//! `pgvigil`: the operator CLI. Same environment as the services; human tables by default,
//! `--json` for scripts, exit codes for cron jobs and uptime checkers. It parses arguments, calls
//! the operator layer of `pgvigil-core`, and renders what comes back.

mod progress;
mod render;
mod restore;

use anyhow::Result;
use clap::{Parser, Subcommand};
use pgvigil_core::operator::prelude::{process, ConfigError, Role, Settings};
use pgvigil_core::operator::{self, Operator, OperatorError, PolicyOverrides};
use std::process::ExitCode;
use tokio_util::sync::CancellationToken;

/// Operator commands for pgvigil backups (configured like the services: see docs/configuration.md).
#[derive(Parser, Debug)]
#[command(version, about, propagate_version = true)]
struct Cli {
    /// With BACKUP_DATABASES: the database to work on (its backups are under BACKUP_PREFIX/<name>).
    /// `status` without it shows every database.
    #[arg(long, global = true, value_name = "NAME")]
    database: Option<String>,
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
        #[command(flatten)]
        policy: PolicyArgs,
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
    /// Restore a backup into a database, all or nothing, falling back to older backups if it is at fault.
    Restore(restore::RestoreArgs),
    /// Check the integrity of the last N backups without restoring them (exit 1 if the newest is bad).
    Check {
        /// How many backups to check, newest first.
        #[arg(long, default_value_t = 5)]
        last: usize,
        /// Also inflate every object and find pg_dump's closing line (slower; decrypts encrypted
        /// backups, so it needs BACKUP_ENCRYPTION_IDENTITY_FILE for them). By default only size
        /// and SHA-256 are compared with the manifest.
        #[arg(long)]
        deep: bool,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Apply retention now, with the backup service's policy (as it recorded it), printing the plan first.
    Prune {
        /// Only print what would be deleted.
        #[arg(long)]
        dry_run: bool,
        /// Delete without asking (required when not on a terminal).
        #[arg(long)]
        yes: bool,
        #[command(flatten)]
        policy: PolicyArgs,
    },
    /// Acknowledge a table anomaly: lift the hold that keeps the backup taken before it from retention.
    Ack {
        /// The held backup (its file name, key or timestamp, as `pgvigil status` names it).
        backup: String,
    },
    /// The weekly review: backups, verification success rate, RTO/RPO, durations, sizes, storage and cost.
    Report {
        /// Window in days.
        #[arg(long, default_value_t = 7)]
        days: u32,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        policy: PolicyArgs,
    },
}

/// Overrides of the policy the services recorded (by default the CLI applies theirs, not this
/// shell's environment).
#[derive(clap::Args, Debug, Clone, Copy)]
struct PolicyArgs {
    /// Retention in days, instead of the backup service's BACKUP_RETENTION_DAYS.
    #[arg(long, value_name = "DAYS")]
    retention_days: Option<u64>,
    /// Backups always kept, instead of the backup service's BACKUP_MIN_KEEP.
    #[arg(long, value_name = "N")]
    min_keep: Option<usize>,
    /// Seconds between backups, instead of the backup service's BACKUP_INTERVAL.
    #[arg(long, value_name = "SECS")]
    backup_interval: Option<u64>,
    /// Seconds between verifications, instead of the verify service's VERIFY_INTERVAL.
    #[arg(long, value_name = "SECS")]
    verify_interval: Option<u64>,
}

impl PolicyArgs {
    fn overrides(self) -> PolicyOverrides {
        PolicyOverrides {
            retention_days: self.retention_days,
            min_keep: self.min_keep,
            backup_interval: self.backup_interval,
            verify_interval: self.verify_interval,
        }
    }
}

/// Asks on the terminal; false when the answer is not yes (or there is no terminal).
pub(crate) fn confirm(question: &str) -> bool {
    use std::io::{BufRead, IsTerminal, Write};
    if !std::io::stdin().is_terminal() {
        return false;
    }
    print!("{question} [y/N] ");
    let _ = std::io::stdout().flush();
    let mut answer = String::new();
    let _ = std::io::stdin().lock().read_line(&mut answer);
    matches!(answer.trim(), "y" | "Y" | "yes" | "YES")
}

/// Narrows settings to one database: the one asked for (which must be one the configuration
/// covers), or refuses when several are configured and none was named.
async fn one_database(settings: Settings, database: Option<&str>, cancel: &CancellationToken) -> Result<Settings> {
    let covered = operator::databases(&settings, cancel).await?;
    match (database, covered) {
        (None, None) => Ok(settings),
        (Some(db), None) => {
            anyhow::bail!("--database {db}: this configuration covers one database (set BACKUP_DATABASES to cover several)")
        }
        (Some(db), Some(names))
            if matches!(settings.databases, pgvigil_core::operator::prelude::Databases::List(_)) && !names.iter().any(|n| n == db) =>
        {
            anyhow::bail!("--database {db}: not one of BACKUP_DATABASES ({})", names.join(", "))
        }
        (Some(db), Some(_)) => Ok(operator::for_database(&settings, db)?),
        (None, Some(names)) => anyhow::bail!(
            "BACKUP_DATABASES covers several databases; say which with --database NAME ({})",
            if names.is_empty() {
                "none has backups yet".to_string()
            } else {
                names.join(", ")
            }
        ),
    }
}

/// `status` of every database (text or JSON); the worst verdict decides the exit status, and a
/// database that cannot be read counts as CRITICAL.
async fn status_of_all(settings: &Settings, names: &[String], json: bool, policy: PolicyArgs, cancel: &CancellationToken) -> u8 {
    let mut worst = if names.is_empty() { 2 } else { 0 };
    let mut rows = Vec::new();
    for db in names {
        let result = async {
            let op = Operator::open(operator::for_database(settings, db)?).await?;
            let p = op.policy(&policy.overrides(), cancel).await?;
            let v = op.status(&p, cancel).await?;
            Ok::<_, OperatorError>((op, p, v))
        }
        .await;
        match result {
            Ok((op, p, v)) => {
                worst = worst.max(v.verdict.exit_code());
                if json {
                    rows.push(serde_json::json!({ "database": db, "status": serde_json::from_str::<serde_json::Value>(&render::status_json(&v)).unwrap_or_default() }));
                } else {
                    println!(
                        "== database {db} ==\n{}policy: {}\n",
                        render::status(&v, &op.storage_description()),
                        p.source
                    );
                }
            }
            Err(e) => {
                worst = 2;
                if json {
                    rows.push(serde_json::json!({ "database": db, "error": e.to_string() }));
                } else {
                    println!("== database {db} ==\nCRITICAL: {e}\n");
                }
            }
        }
    }
    if json {
        println!("{}", serde_json::Value::Array(rows));
    } else if names.is_empty() {
        println!("CRITICAL: no database has backups under this prefix yet");
    }
    worst
}

async fn dispatch(command: Command, database: Option<&str>, cancel: &CancellationToken) -> Result<u8> {
    if let (Command::Status { json, policy }, None) = (&command, database) {
        let settings = Settings::from_env(Role::Cli)?;
        if let Some(names) = operator::databases(&settings, cancel).await? {
            return Ok(status_of_all(&settings, &names, *json, *policy, cancel).await);
        }
    }
    if let Command::BackupNow = command {
        let settings = Settings::from_env(Role::Backup)?;
        // A listed set of databases without --database: each of them, in turn.
        let targets: Vec<Settings> = match (&settings.databases, database) {
            (pgvigil_core::operator::prelude::Databases::List(names), None) => names
                .iter()
                .map(|db| operator::for_database(&settings, db))
                .collect::<Result<_, _>>()?,
            _ => vec![one_database(settings, database, cancel).await?],
        };
        let mut failed = 0;
        for settings in &targets {
            match operator::backup_now(settings, cancel).await {
                Ok(out) => {
                    let m = &out.manifest;
                    println!(
                        "{} ({}, {} tables, {} rows)",
                        m.key,
                        render::human_bytes(m.size),
                        m.tables.len(),
                        m.tables.values().sum::<u64>()
                    );
                }
                // Already logged as `Backup failed` with its cause.
                Err(OperatorError::Backup(_)) => failed += 1,
                Err(e) => return Err(e.into()),
            }
        }
        return Ok(u8::from(failed > 0));
    }
    let op = Operator::open(one_database(Settings::from_env(Role::Cli)?, database, cancel).await?).await?;
    let prefix = op.layout().backups_prefix();
    match command {
        Command::Status { json, policy } => {
            let policy = op.policy(&policy.overrides(), cancel).await?;
            let v = op.status(&policy, cancel).await?;
            let text = if json {
                render::status_json(&v)
            } else {
                format!("{}policy: {}\n", render::status(&v, &op.storage_description()), policy.source)
            };
            println!("{}", text.trim_end());
            Ok(v.verdict.exit_code())
        }
        Command::List { limit, json } => {
            let rows = op.list(limit, cancel).await?;
            let text = if json { render::json(&rows) } else { render::list(&rows, &prefix) };
            println!("{}", text.trim_end());
            Ok(0)
        }
        Command::Check { last, deep, json } => {
            let r = op.check(last, deep, &progress::Terminal::default(), cancel).await?;
            let text = if json { render::json(&r) } else { render::check(&r, &prefix) };
            println!("{}", text.trim_end());
            Ok(u8::from(r.newest_is_bad()))
        }
        Command::Prune { dry_run, yes, policy } => {
            let policy = op.policy(&policy.overrides(), cancel).await?;
            let p = op.prune_plan(&policy, cancel).await?;
            println!("policy: {}", policy.source);
            println!(
                "retention: delete backups older than {} days; keep at least {} complete backups that did not fail verification, the newest backup, and the newest one that passed verification",
                policy.retention.retention_days, policy.retention.min_keep
            );
            for (id, why) in &p.plan.kept {
                println!("keeping {} ({})", op.layout().backup(*id), why.describe());
            }
            if p.plan.delete.is_empty() {
                println!("nothing to delete");
                return Ok(0);
            }
            for id in &p.plan.delete {
                println!(
                    "{} {}",
                    if dry_run { "would delete" } else { "to delete:" },
                    op.layout().backup(*id)
                );
            }
            if dry_run {
                return Ok(0);
            }
            if !yes && !confirm(&format!("Delete these {} backups?", p.plan.delete.len())) {
                eprintln!("nothing deleted: confirm on a terminal, or pass --yes (--dry-run shows the plan only)");
                return Ok(1);
            }
            let done = op.prune(&p, cancel).await?;
            println!(
                "deleted {} backups (with their manifests and verification records)",
                done.delete.len()
            );
            Ok(0)
        }
        Command::Report { days, json, policy } => {
            let policy = op.policy(&policy.overrides(), cancel).await?;
            let r = op.report(days, &policy, cancel).await?;
            let text = if json {
                render::json(&r)
            } else {
                format!("{}\npolicy: {}\n", render::report(&r), policy.source)
            };
            println!("{}", text.trim_end());
            Ok(0)
        }
        Command::Restore(args) => restore::run(&op, args, database, cancel).await,
        Command::Ack { backup } => {
            let name = op.ack(&backup, cancel).await?;
            println!("{name}: hold lifted; retention treats it like any other backup again");
            Ok(0)
        }
        Command::BackupNow => Ok(1),
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    process::memory::tune_allocator();
    let cli = Cli::parse();
    process::telemetry::init(process::telemetry::format_from_env());
    let cancel = process::shutdown::on_signals();
    match dispatch(cli.command, cli.database.as_deref(), &cancel).await {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            let config =
                e.downcast_ref::<ConfigError>().is_some() || matches!(e.downcast_ref::<OperatorError>(), Some(OperatorError::Config(_)));
            ExitCode::from(if config { 2 } else { 1 })
        }
    }
}
