//! `pgvigil restore`: arguments, the target URL (kept out of argv where possible), and the report.

use crate::progress::Terminal;
use anyhow::{bail, Result};
use chrono::Utc;
use pgvigil_core::operator::prelude::DbUrl;
use pgvigil_core::operator::prelude::{human_bytes, human_secs};
use pgvigil_core::operator::{Operator, RestoreRequest, TableRequest};
use tokio_util::sync::CancellationToken;

/// Arguments of `pgvigil restore`.
#[derive(clap::Args, Debug)]
pub struct RestoreArgs {
    /// Target database URL. Prefer RESTORE_DATABASE_URL (or RESTORE_DATABASE_URL_FILE): a password
    /// given here is visible to other users of this machine in the process list. The database must exist.
    #[arg(long, value_name = "URL")]
    to: Option<String>,
    /// Which backup: `latest`, a key or file name, a time (`2026-11-25T17:00:00Z`,
    /// `2026-11-25T17:00Z`, `"2026-11-25 17:00"` in UTC, `2026-11-25` for the end of that day) or a
    /// span ago (`2h`, `3d`): the newest backup taken at or before it. The output says which one it
    /// chose and why.
    #[arg(long, default_value = "latest")]
    backup: String,
    /// How many older backups to try if the chosen one is at fault (damaged, or its SQL fails).
    #[arg(long, default_value_t = 2)]
    fallback: usize,
    /// Replace everything in a non-empty target. The old contents are dropped inside the restore's
    /// own transaction, so if the restore fails they are still there.
    #[arg(long)]
    clean: bool,
    /// With --clean: replace without asking (required when not on a terminal).
    #[arg(long)]
    yes: bool,
    /// Leave out ownership and grants: every object belongs to the restoring role (for a server
    /// whose roles differ). By default they are restored, and roles the backup names that the
    /// target lacks are created first (without passwords), in the same transaction.
    #[arg(long)]
    no_privileges: bool,
    /// The most one restore attempt may take, in seconds; then psql and its server process are
    /// stopped and nothing is committed. Default: VERIFY_TIMEOUT, else four times the longest
    /// recent verification's restore (at least an hour) when verifications are on record, else
    /// none.
    #[arg(long, value_name = "SECONDS", value_parser = clap::value_parser!(u64).range(1..))]
    timeout: Option<u64>,
    /// Restore into a new database of this name, made on the target's server (the target then
    /// only says which server, and the database to connect to while making it). pgvigil builds it
    /// under a name of its own and gives it NAME only once the restore succeeded; any failure drops
    /// it, so a database called NAME is always a whole restore. NAME may not start with
    /// `pgvigil_verify_` or `pgvigil_building_` (pgvigil drops leftover databases of those names).
    /// The output says how to switch over.
    #[arg(long, value_name = "NAME", conflicts_with_all = ["clean", "table"])]
    create: Option<String>,
    /// With --create: load the tables' data over this many sessions at once (1 to 64; default 1,
    /// one stream). Each session commits as it goes, which only a database of its own allows.
    /// Backups that do not record the checksums of their parts (encrypted ones, older ones) are
    /// restored in one stream; the output says why.
    #[arg(long, value_name = "N", requires = "create", value_parser = clap::value_parser!(u16).range(1..=64))]
    jobs: Option<u16>,
    /// Restore only this table (`schema.name`), with its partitions, sequences, indexes,
    /// constraints, triggers, policies and grants, into a database that holds the rest. It comes
    /// back under its own name if it is gone, else as `<name>_restored`; nothing that exists is
    /// touched unless --replace. Only the parts of the backup it needs are read where the backup
    /// allows (the output says so). One transaction: a failure changes nothing.
    #[arg(long, value_name = "SCHEMA.NAME", conflicts_with = "clean")]
    table: Option<String>,
    /// With --table: the name to restore it under (`schema.name`; the schema must exist).
    #[arg(long = "as", value_name = "SCHEMA.NAME", requires = "table")]
    rename: Option<String>,
    /// With --table: put the backup's table in place of the live one (dropped in the same
    /// transaction; other tables' foreign keys to it are added back, and must hold).
    #[arg(long, requires = "table")]
    replace: bool,
}

/// Runs the restore and prints the outcome.
pub async fn run(op: &Operator, args: RestoreArgs, database: Option<&str>, cancel: &CancellationToken) -> Result<u8> {
    let target = match (&args.to, &op.settings().restore_database_url) {
        (Some(to), _) => {
            let url = DbUrl::parse(to)
                .map_err(|e| anyhow::anyhow!("--to: {e}"))?
                .with_environment(&op.settings().libpq);
            if url.has_password() {
                say_err!("warning: the password in --to is visible to other users of this machine (ps, /proc); set RESTORE_DATABASE_URL or RESTORE_DATABASE_URL_FILE instead");
            }
            url
        }
        (None, Some(url)) => {
            // One RESTORE_DATABASE_URL serves every database of a multi-database setup: never
            // pour one database's backup into another's target by accident.
            if let Some(db) = database.filter(|db| *db != url.database()) {
                bail!(
                    "--database {db}: RESTORE_DATABASE_URL points at database {}; pass --to with the target for {db}'s backup",
                    url.database()
                );
            }
            url.clone()
        }
        (None, None) => bail!(
            "say where to restore: set RESTORE_DATABASE_URL (or RESTORE_DATABASE_URL_FILE, or libpq's PGHOST/PGDATABASE/PGUSER/PGPASSWORD), or pass --to URL"
        ),
    };
    if let Some(table) = args.table {
        return run_table(
            op,
            args.backup,
            table,
            args.rename,
            args.replace,
            !args.no_privileges,
            args.timeout,
            target,
            cancel,
        )
        .await;
    }
    if args.clean {
        let (contents, _) = op.inspect_target(&target).await?;
        if !contents.is_empty() {
            say!("--clean will replace everything in {target}: {contents}");
            if !args.yes && !crate::confirm("Replace it (inside the restore's transaction)?") {
                bail!("nothing was changed: confirm on a terminal, or pass --yes together with --clean");
            }
        }
    }
    let req = RestoreRequest {
        target,
        backup: args.backup,
        fallback: args.fallback,
        clean: args.clean,
        privileges: !args.no_privileges,
        timeout: args.timeout.map(std::time::Duration::from_secs),
        create: args.create,
        jobs: args.jobs.map_or(1, usize::from),
    };
    let out = op.restore(&req, &Terminal::default(), cancel).await?;
    let into = out.created.clone().unwrap_or_else(|| req.target.database());
    say!("restored {} into {into}", out.key);
    if let Some(n) = out.sessions {
        say!("table data loaded over {n} sessions at once");
    }
    if out.created.is_some() {
        say!("to switch the application over (with nobody connected to either database):");
        let quoted = pgvigil_core::operator::prelude::quote_ident(&into);
        say!("  ALTER DATABASE <current> RENAME TO <current>_old; ALTER DATABASE {quoted} RENAME TO <current>;");
    }
    if let Some(replaced) = &out.replaced {
        say!("replaced: {replaced} (dropped in the same transaction)");
    }
    if out.subscriptions_left_out > 0 {
        say!(
            "left out: {} subscription statement(s) of the backup; pgvigil never restores a subscription (it would tie the restored database to a publisher). Recreate any you need with CREATE SUBSCRIPTION once the publisher is known to be the right one",
            out.subscriptions_left_out
        );
    }
    say!("time taken (RTO): {:.1}s", out.rto_secs);
    say!(
        "data as of {} ({} old: RPO)",
        out.id.0.format("%Y-%m-%d %H:%M:%S UTC"),
        human_secs(out.rpo_secs(Utc::now()))
    );
    if !out.skipped.is_empty() {
        say!("note: {} newer backup(s) were at fault and skipped:", out.skipped.len());
        for (key, why) in &out.skipped {
            say!("  {key}: {}", crate::term::one_line(why));
        }
    }
    Ok(0)
}

/// `pgvigil restore --table`.
#[allow(clippy::too_many_arguments)]
async fn run_table(
    op: &Operator,
    backup: String,
    table: String,
    rename: Option<String>,
    replace: bool,
    privileges: bool,
    timeout: Option<u64>,
    target: DbUrl,
    cancel: &CancellationToken,
) -> Result<u8> {
    let req = TableRequest {
        target,
        backup,
        table,
        rename,
        replace,
        privileges,
        timeout: timeout.map(std::time::Duration::from_secs),
    };
    let out = op.restore_table(&req, &Terminal::default(), cancel).await?;
    let how = if out.replaced { "in place of the live table" } else { "as" };
    say!(
        "restored {} from {} {how} {} in {}",
        out.table,
        out.key,
        out.placed,
        req.target.database()
    );
    say!("rows: {}", out.rows);
    if !out.others.is_empty() {
        say!("with (as the backup names them): {}", out.others.join(", "));
    }
    for what in &out.left_out {
        say!("left out: {what} (add it yourself once the rows agree)");
    }
    let (read, size) = out.read;
    match out.whole_because {
        None => say!(
            "read {} of the backup's {} (only the parts this table needs)",
            human_bytes(read),
            human_bytes(size)
        ),
        Some(why) => say!("read the whole backup ({}): {why}", human_bytes(size)),
    }
    say!("time taken: {:.1}s", out.secs);
    say!(
        "data as of {} ({} old)",
        out.id.0.format("%Y-%m-%d %H:%M:%S UTC"),
        human_secs((Utc::now() - out.id.0).num_seconds())
    );
    if !out.replaced && out.placed != out.table {
        say!(
            "to swap it in: check it, then in one transaction rename or drop {} and rename {} (or run again with --replace)",
            out.table,
            out.placed
        );
    }
    Ok(0)
}
