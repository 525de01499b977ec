//! `pgvigil`: the operator CLI. Same environment as the services; human tables by default,
//! `--json` for scripts, exit codes for cron jobs and uptime checkers. It parses arguments, calls
//! the operator layer of `pgvigil-core`, and renders what comes back.

#[macro_use]
mod term;
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
    /// With a second destination (SECONDARY_S3_BUCKET or SECONDARY_BACKUP_DIR): read the backups
    /// there instead of in the primary. Without it, `restore` and `list` read the secondary by
    /// themselves when the primary cannot be listed, and say so.
    #[arg(long, global = true, value_enum)]
    from: Option<From>,
    #[command(subcommand)]
    command: Command,
}

/// Which destination a command reads.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
enum From {
    /// S3_BUCKET or BACKUP_DIR.
    Primary,
    /// SECONDARY_S3_BUCKET or SECONDARY_BACKUP_DIR.
    Secondary,
}

/// The CLI's settings from the environment, reading the destination asked for.
fn cli_settings(from: Option<From>) -> Result<Settings> {
    let settings = Settings::from_env(Role::Cli)?;
    Ok(match from {
        Some(From::Secondary) => operator::from_secondary(settings)?,
        _ => settings,
    })
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
        /// backups, so it needs BACKUP_ENCRYPTION_IDENTITY(_FILE) for them). By default only size
        /// and SHA-256 are compared with the manifest.
        #[arg(long)]
        deep: bool,
        /// Instead, check that every backup retention keeps is still in storage with the size its
        /// manifest records (nothing is downloaded; exit 1 if any is missing or changed).
        #[arg(long, conflicts_with_all = ["deep", "last"])]
        presence: bool,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        policy: PolicyArgs,
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
    /// Acknowledge a table anomaly (lift the hold that keeps the backup taken before it from
    /// retention) or a backup lost from storage (remove its manifest, so the presence check stops
    /// reporting it).
    Ack {
        /// The held or missing backup (its file name, key or timestamp, as `pgvigil status` names it).
        backup: String,
    },
    /// The weekly review: backups, verification success rate, RTO/RPO, durations, sizes, storage and cost.
    Report {
        /// Window in days.
        #[arg(long, default_value_t = 7, value_parser = clap::value_parser!(u32).range(1..=36_500))]
        days: u32,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
        /// Also write the status page (these figures, charts over 30 and 90 days, the latest runs)
        /// to FILE, for the weekly review or an email.
        #[arg(long, value_name = "FILE")]
        html: Option<std::path::PathBuf>,
        #[command(flatten)]
        policy: PolicyArgs,
    },
}

/// Overrides of the policy the services recorded (by default the CLI applies theirs, not this
/// shell's environment).
#[derive(clap::Args, Debug, Clone, Copy)]
struct PolicyArgs {
    /// Retention in days (1–36500), instead of the backup service's BACKUP_RETENTION_DAYS.
    #[arg(long, value_name = "DAYS", value_parser = clap::value_parser!(u64).range(1..=36_500))]
    retention_days: Option<u64>,
    /// Backups always kept (1–10000), instead of the backup service's BACKUP_MIN_KEEP.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=10_000))]
    min_keep: Option<u64>,
    /// Seconds between backups (1–31622400), instead of the backup service's BACKUP_INTERVAL.
    #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..=31_622_400))]
    backup_interval: Option<u64>,
    /// Seconds between verifications (1–31622400), instead of the verify service's
    /// VERIFY_INTERVAL.
    #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..=31_622_400))]
    verify_interval: Option<u64>,
}

impl PolicyArgs {
    fn overrides(self) -> PolicyOverrides {
        PolicyOverrides {
            retention_days: self.retention_days,
            min_keep: self.min_keep.and_then(|n| usize::try_from(n).ok()),
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
    say_inline!("{question} [y/N] ");
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

/// `status`: every database the configuration covers (or the one asked for), text or JSON. The
/// worst verdict decides the exit status, and anything that cannot be read — storage down,
/// credentials refused, a bucket missing — is CRITICAL (2), in every mode, so a monitoring check
/// can rely on it.
async fn status(database: Option<&str>, from: Option<From>, json: bool, policy: PolicyArgs, cancel: &CancellationToken) -> u8 {
    let settings = match cli_settings(from) {
        Ok(s) => s,
        Err(e) => {
            say_err!("error: {e}");
            return 2;
        }
    };
    let targets: Vec<(Option<String>, Result<Settings>)> = match (database, operator::databases(&settings, cancel).await) {
        (None, Ok(Some(names))) => names
            .iter()
            .map(|db| (Some(db.clone()), operator::for_database(&settings, db).map_err(Into::into)))
            .collect(),
        (db, Ok(_)) => vec![(db.map(String::from), one_database(settings, db, cancel).await)],
        (db, Err(e)) => vec![(db.map(String::from), Err(e.into()))],
    };
    if targets.is_empty() {
        say!(
            "{}",
            if json {
                "[]"
            } else {
                "CRITICAL: no database has backups under this prefix yet"
            }
        );
        return 2;
    }
    let several = targets.len() > 1 || targets.iter().any(|(db, _)| db.is_some()) && database.is_none();
    let mut worst = 0;
    let mut rows = Vec::new();
    for (db, settings) in targets {
        let result = async {
            // With a second destination, an unreadable primary is a warning while the secondary
            // holds the backups (it says so below), not "no backups".
            let op = match from {
                Some(_) => Operator::open(settings?).await?,
                None => Operator::open_reachable(settings?, cancel).await?.0,
            };
            let p = op.policy(&policy.overrides(), cancel).await?;
            let v = op.status(&p, cancel).await?;
            Ok::<_, anyhow::Error>((op, p, v))
        }
        .await;
        let (code, text, value) = match result {
            Ok((op, p, v)) => (
                v.verdict.exit_code(),
                format!("{}policy: {}\n", render::status(&v, &op.storage_description()), p.source),
                serde_json::from_str::<serde_json::Value>(&render::status_json(&v)).unwrap_or_default(),
            ),
            Err(e) => (
                2,
                format!("CRITICAL: {}\n", render::error(&e)),
                serde_json::json!({ "verdict": "CRITICAL", "error": render::error(&e) }),
            ),
        };
        worst = worst.max(code);
        match (json, several, db) {
            (true, true, Some(db)) => rows.push(serde_json::json!({ "database": db, "status": value })),
            (true, _, _) => rows.push(value),
            (false, true, Some(db)) => say!("== database {db} ==\n{text}"),
            (false, _, _) => say!("{}", text.trim_end()),
        }
    }
    if json {
        let out = if several {
            serde_json::Value::Array(rows)
        } else {
            rows.pop().unwrap_or_default()
        };
        say!("{out}");
    }
    worst
}

/// `backup-now`: one backup of the database asked for, or of each listed one in turn.
async fn backup_now(database: Option<&str>, cancel: &CancellationToken) -> Result<u8> {
    let settings = Settings::from_env(Role::Backup)?;
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
                let rows: u64 = m.tables.values().sum();
                say!(
                    "{} ({}, {} tables, {rows} rows)",
                    m.key,
                    render::human_bytes(m.size),
                    m.tables.len()
                );
            }
            // Already logged as `Backup failed` with its cause.
            Err(OperatorError::Backup(_)) => failed += 1,
            Err(e) => return Err(e.into()),
        }
    }
    Ok(u8::from(failed > 0))
}

/// `prune`: the plan, then (confirmed) the deletes.
async fn prune(op: &Operator, dry_run: bool, yes: bool, policy: PolicyArgs, cancel: &CancellationToken) -> Result<u8> {
    let p = op.prune_plan(&op.policy(&policy.overrides(), cancel).await?, cancel).await?;
    say_inline!("{}", render::prune_plan(&p, &op.layout().backups_prefix(), dry_run));
    if p.plan.delete.is_empty() || dry_run {
        return Ok(0);
    }
    if !yes && !confirm(&format!("Delete these {} backups?", p.plan.delete.len())) {
        say_err!("nothing deleted: confirm on a terminal, or pass --yes (--dry-run shows the plan only)");
        return Ok(1);
    }
    let done = op.prune(&p, cancel).await?;
    say!(
        "deleted {} backups (with their manifests and verification records)",
        done.delete.len()
    );
    Ok(0)
}

/// The storage of the database asked for.
async fn open(database: Option<&str>, from: Option<From>, cancel: &CancellationToken) -> Result<Operator> {
    Ok(Operator::open(one_database(cli_settings(from)?, database, cancel).await?).await?)
}

/// [`open`], for commands that read backups: without `--from`, the secondary destination when
/// the primary cannot be listed (saying so on stderr).
async fn open_reachable(database: Option<&str>, from: Option<From>, cancel: &CancellationToken) -> Result<Operator> {
    let settings = one_database(cli_settings(from)?, database, cancel).await?;
    if from.is_some() {
        return Ok(Operator::open(settings).await?);
    }
    let (op, note) = Operator::open_reachable(settings, cancel).await?;
    if let Some(note) = note {
        say_err!("note: {note}");
    }
    Ok(op)
}

/// Writes the status page to `file`: to a new temporary file beside it, then renamed, so that a
/// failure never leaves half a page where the last one was.
fn write_page(file: &std::path::Path, html: &str) -> Result<()> {
    use std::io::Write as _;
    let dir = match file.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => std::path::Path::new("."),
    };
    // A new file of its own (never one that someone placed or linked there), renamed over.
    let written = tempfile::NamedTempFile::new_in(dir)
        .and_then(|mut tmp| tmp.write_all(html.as_bytes()).and_then(|()| tmp.as_file().sync_all()).map(|()| tmp))
        .and_then(|tmp| tmp.persist(file).map_err(|e| e.error));
    written.map_err(|e| anyhow::anyhow!("cannot write the page to {}: {e}", file.display()))?;
    say_err!("wrote the status page to {}", file.display());
    Ok(())
}

/// Prints `text` without its trailing blank lines.
fn show(text: &str) {
    say!("{}", text.trim_end());
}

async fn dispatch(command: Command, database: Option<&str>, from: Option<From>, cancel: &CancellationToken) -> Result<u8> {
    match command {
        Command::Status { json, policy } => Ok(status(database, from, json, policy, cancel).await),
        Command::BackupNow if from.is_some() => {
            anyhow::bail!("backup-now writes to every destination; --from applies to the commands that read backups")
        }
        Command::BackupNow => backup_now(database, cancel).await,
        Command::List { limit, json } => {
            let op = open_reachable(database, from, cancel).await?;
            let rows = op.list(limit, cancel).await?;
            show(&if json {
                render::json(&rows)
            } else {
                render::list(&rows, &op.layout().backups_prefix())
            });
            Ok(0)
        }
        Command::Check {
            last,
            deep,
            presence,
            json,
            policy,
        } => {
            let op = open(database, from, cancel).await?;
            let r = if presence {
                op.check_presence(&op.policy(&policy.overrides(), cancel).await?, cancel).await?
            } else {
                op.check(last, deep, &progress::Terminal::default(), cancel).await?
            };
            show(&if json {
                render::json(&r)
            } else {
                render::check(&r, &op.layout().backups_prefix())
            });
            let bad = if presence {
                r.backups.iter().any(|b| !b.ok)
            } else {
                r.newest_is_bad()
            };
            Ok(u8::from(bad))
        }
        Command::Prune { dry_run, yes, policy } => prune(&open(database, from, cancel).await?, dry_run, yes, policy, cancel).await,
        Command::Report { days, json, html, policy } => {
            let op = open(database, from, cancel).await?;
            let policy = op.policy(&policy.overrides(), cancel).await?;
            let (r, page) = op.report(days, &policy, html.is_some(), cancel).await?;
            if let (Some(file), Some(page)) = (html, page) {
                write_page(&file, &page)?;
            }
            show(&if json {
                render::json(&r)
            } else {
                format!("{}\npolicy: {}\n", render::report(&r), policy.source)
            });
            Ok(0)
        }
        Command::Restore(args) => restore::run(&open_reachable(database, from, cancel).await?, args, database, cancel).await,
        Command::Ack { backup } => {
            say!("{}", open(database, from, cancel).await?.ack(&backup, cancel).await?);
            Ok(0)
        }
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    process::prepare();
    let cli = Cli::parse();
    process::telemetry::init(process::telemetry::format_from_env());
    let cancel = process::shutdown::on_signals();
    match dispatch(cli.command, cli.database.as_deref(), cli.from, &cancel).await {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            say_err!("error: {}", render::error(&e));
            let config =
                e.downcast_ref::<ConfigError>().is_some() || matches!(e.downcast_ref::<OperatorError>(), Some(OperatorError::Config(_)));
            ExitCode::from(if config { 2 } else { 1 })
        }
    }
}

/// What `docs/cli.md` opens with, before the reference generated from the definitions above.
#[cfg(test)]
const REFERENCE_HEAD: &str = "# `pgvigil` command reference

Generated from the command-line definitions (`crates/cli/src/main.rs`, `restore.rs`) by a test that
fails when this file is stale: `PGVIGIL_WRITE_DOCS=1 cargo nextest run -p pgvigil -E 'test(cli_reference)'`
rewrites it. Configuration comes from the environment, like the services' ([configuration.md](configuration.md)).

## Exit codes

| command | 0 | 1 | 2 |
|---|---|---|---|
| `status` | OK | WARNING (a backup overdue by more than an hour, a failed backup attempt, no verification yet or none for 2 × VERIFY_INTERVAL + 1 h, a held backup, a backup dated in the future, …) | CRITICAL: no backup at all, the newest backup empty or older than 2 × BACKUP_INTERVAL + 1 h, the newest verification failed, or storage could not be read (unreachable, credentials refused, bucket missing) — in every mode, with and without `--database` |
| `list`, `report`, `ack` | done | failed (the message says why: storage, no such backup) | the configuration is invalid |
| `check` | the newest backup checked is good | the newest backup checked is bad, or storage failed | the configuration is invalid |
| `backup-now` | every backup asked for completed | a backup failed (`Backup failed` says why) | the configuration is invalid |
| `restore` | restored (the output says which backup and why it was chosen) | nothing restored: every candidate was at fault, or the environment failed (the target was left as it was), or — said in capitals — the target was changed | the configuration is invalid |
| `prune` | done, or nothing to delete, or `--dry-run` | not confirmed, or storage failed | the configuration is invalid |

";

#[cfg(test)]
mod tests {
    #[test]
    fn the_cli_reference_is_generated_from_these_definitions() {
        let generated = format!("{}{}", super::REFERENCE_HEAD, clap_markdown::help_markdown::<super::Cli>());
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/cli.md");
        if std::env::var_os("PGVIGIL_WRITE_DOCS").is_some() {
            std::fs::write(path, &generated).unwrap();
        }
        let current = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            current == generated,
            "docs/cli.md is stale: PGVIGIL_WRITE_DOCS=1 cargo nextest run -p pgvigil -E 'test(cli_reference)'"
        );
    }
}
