//! One table back from a backup (`pgvigil restore --table`).
//!
//! Reading: when the manifest records the byte ranges of the schema before the data, of every
//! table's COPY block and of what follows the data — each with its SHA-256 — only the schema
//! ranges and the family's blocks are fetched, by ranged GET, and each range is checked against
//! its hash. Otherwise (an encrypted backup, or one taken before pgvigil recorded them) the whole
//! object is read and checked against the manifest's SHA-256 as a full restore does.
//!
//! Restoring: the [`filter`] keeps what rebuilds the table's family and points it at a staging
//! schema; the gate judges every statement as for a full restore; psql runs it all in one
//! transaction; the [`epilogue`] checks the rows and moves the table to its place. The COMMIT is
//! sent only when every byte read was proven intact and the row counts agree with the manifest.

pub mod epilogue;
pub mod filter;
pub mod names;
mod read;
pub mod select;

pub use read::reads_ranges;
use read::{produce, source, Produced, Source, Stop};

use super::stream::{feed_psql, scan_stage, StreamError, PARSER_STACK};
use super::{gate_rules, Attempt, RestoreError, StreamReport, Target};
use crate::infra::pg::psql::{Outcome, PsqlTransaction};
use crate::infra::storage::{DynStorage, Key, StorageError};
use crate::records::manifest::Manifest;
use bytes::Bytes;
use filter::Filter;
use names::Name;
use select::Family;
use std::collections::BTreeMap;
use tokio_util::sync::CancellationToken;

/// One table restore, ready to run.
pub struct TableJob<'a> {
    /// The backup object.
    pub key: &'a Key,
    /// Its manifest (trusted).
    pub manifest: &'a Manifest,
    /// The table (and how foreign keys to other tables are treated).
    pub family: Family,
    /// The staging schema.
    pub stage: String,
    /// What the epilogue does.
    pub placing: epilogue::Move,
}

/// What a table restore did.
#[derive(Debug)]
pub struct TableAttempt {
    /// The transaction's outcome, and why the bytes read are not what the backup wrote (empty
    /// when intact).
    pub attempt: Attempt,
    /// The relations restored.
    pub family: Family,
    /// Rows restored per COPY block's table (as pg_dump printed it).
    pub rows: BTreeMap<String, u64>,
    /// What was left out on purpose.
    pub left_out: Vec<String>,
    /// Bytes read from storage.
    pub read: u64,
    /// Only ranges were read (`false`: the whole object).
    pub ranged: bool,
    /// Why a one-table restore cannot be made from this backup (nothing was committed; the
    /// backup is not at fault).
    pub unsupported: Option<String>,
}

/// The rows the manifest counts for the family, what disagrees with the blocks restored, and
/// whether the backup holds the family's data at all.
fn row_problems(m: &Manifest, family: &Family, rows: &BTreeMap<String, u64>) -> (u64, Vec<String>, Option<String>) {
    let mut problems = Vec::new();
    let mut total = 0;
    let mut listed = 0;
    for (table, want) in &m.tables {
        if !Name::parse(table).is_some_and(|n| family.has(&n)) {
            continue;
        }
        listed += 1;
        total += want;
        let got = rows.get(table).copied().unwrap_or(0);
        if got != *want {
            problems.push(format!("the backup's data of {table} holds {got} rows, its manifest counts {want}"));
        }
    }
    for table in rows.keys().filter(|t| !m.tables.contains_key(*t)) {
        problems.push(format!("the backup holds data of {table}, which its manifest does not list"));
    }
    // An empty table has a block of no rows; none at all means the data is elsewhere (dumped
    // through its partition root) or was left out of the dump.
    let missing = (listed == 0).then(|| {
        format!(
            "the backup holds no data of {} under its own name (it was dumped through its partition root, or its data was left out of the dump); restore its partition root, or the whole backup into a new database",
            family.root
        )
    });
    (total, problems, missing)
}

/// Stops psql and asks the server what became of the transaction: `why` when it was rolled
/// back (or never began), else the outcome itself, for the shared rules to judge (a COMMIT that
/// went through in the meantime is never reported as "left as it was").
async fn give_up(tx: &mut PsqlTransaction, why: RestoreError, ranged: bool) -> Result<TableAttempt, RestoreError> {
    match tx.rollback().await {
        Outcome::RolledBack(_) | Outcome::NotStarted(_) => Err(why),
        outcome => Ok(TableAttempt {
            attempt: Attempt {
                report: StreamReport::default(),
                problems: Vec::new(),
                outcome,
            },
            family: Family::new(Name::new("", ""), false),
            rows: BTreeMap::new(),
            left_out: Vec::new(),
            read: 0,
            ranged,
            unsupported: None,
        }),
    }
}

/// A failure of storage or of pgvigil's own threads: nothing is known of the backup.
fn broken(why: String) -> RestoreError {
    StreamError::Storage(StorageError::other(why, true)).into()
}

/// The reading and gate threads, and what they hand back.
struct Stages {
    /// What the gate passed, for psql.
    sql: tokio::sync::mpsc::Receiver<Vec<u8>>,
    /// What the reader found.
    read: tokio::sync::oneshot::Receiver<Result<Produced, Stop>>,
    /// What the gate found.
    scan: tokio::sync::oneshot::Receiver<crate::pipeline::stages::dumpscan::ScanResult>,
}

/// Starts the reader (ranges or the whole object, through the filter) and the gate, each on a
/// thread with the parser's stack.
fn start(storage: DynStorage, job: &TableJob<'_>, target: &Target<'_>, cancel: &CancellationToken) -> Result<Stages, RestoreError> {
    let identities = super::stream::identities_for(job.key, &target.identities.0)?;
    let filter = Filter::new(job.family.clone(), &job.stage);
    let (raw_tx, raw_rx) = tokio::sync::mpsc::channel::<Bytes>(8);
    let (sql_tx, sql) = tokio::sync::mpsc::channel::<Vec<u8>>(8);
    let (read_tx, read) = tokio::sync::oneshot::channel();
    let (scan_tx, scan) = tokio::sync::oneshot::channel();
    let handle = tokio::runtime::Handle::current();
    let work = (storage, job.key.clone(), job.manifest.clone(), source(job.manifest));
    let reader_cancel = cancel.clone();
    let spawn = |name: &str, f: Box<dyn FnOnce() + Send>| {
        std::thread::Builder::new()
            .name(name.into())
            .stack_size(PARSER_STACK)
            .spawn(f)
            .map_err(|e| broken(format!("cannot start the {name} thread: {e}")))
    };
    spawn(
        "pgvigil-table",
        Box::new(move || {
            let _ = read_tx.send(produce(&handle, work, identities, filter, &raw_tx, &reader_cancel));
        }),
    )?;
    let rules = gate_rules(Some(job.manifest), target.strip);
    spawn(
        "pgvigil-gate",
        Box::new(move || {
            let _ = scan_tx.send(scan_stage(raw_rx, &sql_tx, Some(rules)));
        }),
    )?;
    Ok(Stages { sql, read, scan })
}

/// What must stop the commit (the backup's fault), the rows the manifest counts, and why a
/// one-table restore cannot be made from this backup, if it cannot.
fn findings(m: &Manifest, report: &StreamReport, produced: &mut Produced) -> (Vec<String>, u64, Option<String>) {
    let mut problems = std::mem::take(&mut produced.problems);
    if let Some(why) = &report.scan.forbidden {
        problems.insert(
            0,
            format!("{why}; a backup of pg_dump's holds no such thing, so it was not restored"),
        );
    }
    if let Some(why) = produced.filter.error.take() {
        problems.push(why);
    }
    if !produced.complete {
        return (problems, 0, None);
    }
    let (total, rows, missing) = row_problems(m, produced.filter.family(), &produced.filter.rows);
    problems.extend(rows);
    (problems, total, produced.filter.unsupported.take().or(missing))
}

/// Restores one table: streams what rebuilds it through the gate into psql inside one
/// transaction, and commits (through the epilogue) only when everything read is intact.
///
/// # Errors
/// [`RestoreError`] when storage, shutdown or psql's start prevented an answer; nothing was
/// committed.
pub async fn restore_table(
    storage: DynStorage,
    job: TableJob<'_>,
    target: &Target<'_>,
    cancel: &CancellationToken,
) -> Result<TableAttempt, RestoreError> {
    let preamble = format!("{}{}", target.preamble, epilogue::open(&job.stage));
    let mut tx = PsqlTransaction::begin(target.psql, target.url, &preamble).await?;
    let ranged = matches!(source(job.manifest), Source::Ranged { .. });
    let mut stages = match start(storage, &job, target, cancel) {
        Ok(s) => s,
        Err(e) => return give_up(&mut tx, e, ranged).await,
    };
    let deadline = target.deadline.map(|d| tokio::time::Instant::now() + d);
    let timed_out = || RestoreError::TimedOut(target.deadline.unwrap_or_default());
    let fed = super::before(deadline, feed_psql(&mut tx, &mut stages.sql, cancel)).await;
    // Nobody reads the gate's output any more: its thread, and the reader behind it, stop at
    // their next send instead of waiting for good.
    drop(stages.sql);
    let stopped = match fed {
        None => return give_up(&mut tx, timed_out(), ranged).await,
        Some(Err(e)) => return give_up(&mut tx, e.into(), ranged).await,
        Some(Ok(stopped)) => stopped,
    };
    let scan = stages.scan.await.map_err(|_| broken("the scanning thread failed".into()))?;
    let produced = stages.read.await.map_err(|_| broken("the reading thread failed".into()))?;
    let mut produced = match produced {
        Ok(p) => p,
        // The gate or psql stopped first: the reader's counts say nothing about the backup.
        Err(Stop::Consumer) if scan.forbidden.is_some() || stopped.is_some() => Produced {
            filter: Filter::new(job.family.clone(), &job.stage),
            problems: Vec::new(),
            read: 0,
            complete: false,
        },
        Err(Stop::Consumer) => return give_up(&mut tx, broken("the restore stopped reading the backup".into()), ranged).await,
        Err(Stop::Cancelled) => return give_up(&mut tx, StreamError::Cancelled.into(), ranged).await,
        Err(Stop::Key(why)) => return give_up(&mut tx, StreamError::Key(why).into(), ranged).await,
        Err(Stop::Broken(why)) => return give_up(&mut tx, broken(format!("reading {}: {why}", job.key)), ranged).await,
    };
    let report = StreamReport {
        scan,
        ..StreamReport::default()
    };
    let (problems, total, unsupported) = findings(job.manifest, &report, &mut produced);
    let outcome = match stopped {
        Some(outcome) => outcome,
        None if problems.is_empty() && unsupported.is_none() => {
            // Every constraint, trigger and policy the table of contents lists on the family
            // must exist (a part the filter did not carry over fails it) before the move.
            let expected = produced.filter.family().expected(&job.manifest.toc, &job.stage);
            let placing = epilogue::Move {
                rows: total,
                guard: super::toc::guard_raising(&expected, epilogue::INCOMPLETE, Some(&job.stage)).unwrap_or_default(),
                ..job.placing
            };
            match super::before(deadline, tx.commit(Some(&epilogue::sql(&placing)), cancel)).await {
                Some(outcome) => outcome,
                // The server says what became of it: a COMMIT that went through is reported
                // with what was restored, never as "left as it was".
                None => match tx.rollback().await {
                    Outcome::RolledBack(_) | Outcome::NotStarted(_) => return Err(timed_out()),
                    outcome => outcome,
                },
            }
        }
        None => tx.rollback().await,
    };
    if cancel.is_cancelled() && matches!(outcome, Outcome::RolledBack(_) | Outcome::NotStarted(_)) {
        return Err(StreamError::Cancelled.into());
    }
    let filter = produced.filter;
    Ok(TableAttempt {
        attempt: Attempt { report, problems, outcome },
        family: filter.family().clone(),
        rows: filter.rows,
        left_out: filter.left_out,
        read: produced.read,
        ranged,
        unsupported,
    })
}
