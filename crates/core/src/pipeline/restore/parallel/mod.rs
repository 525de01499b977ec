//! Restoring a backup over several sessions at once, into a database that is dropped whenever the
//! restore does not succeed (a verification's scratch database, or one `pgvigil restore --create`
//! makes). The manifest's parts ([`plan`]) are read by ranged GETs, each checked against its own
//! SHA-256 and judged by the statement gate, in three phases:
//!
//! 1. the schema before the data, in one session, committed;
//! 2. the tables' COPY blocks, largest first, in up to `jobs` sessions at once (each holding one
//!    block at a time and a permit of the shared bound); and, read and split before the data loads,
//!    each table's index builds, which start as soon as all of that table's data is committed, in
//!    the same sessions ([`queue`]; a session commits when builds wait for data it holds, once it
//!    holds enough of it, and at its end); the runs between blocks may hold nothing but comments;
//! 3. the rest of what follows the data (constraints, triggers, sequence values, large objects) in
//!    the dump's order in one session, committed only after the table-of-contents guard passed
//!    ([`rest`]).
//!
//! Every byte of the object lies in a part, and each part is checked against its own recorded
//! SHA-256 before its session commits. Where the manifest's signature was verified
//! ([`Sessions::signed`]) and every part's hash is recorded, that proves the object, which is read
//! once (and its size and version tag are the same at the end as at the start). Otherwise the whole
//! object is read once more through SHA-256 only, hashing each part on the way ([`digest`]), beside
//! the first two phases (each part is still checked against its own recorded hash before anything of
//! it is committed), and phase 3 does not start before the object is proven to be what the manifest
//! records. Each part must end where a statement may begin (the gate, fresh for every part, would
//! otherwise never see a statement cut at its end), the schema must leave the session as pg_dump's header sets
//! it (the later sessions start that way), and each table's part must be exactly one COPY block of
//! its rows. Anything not so, and any session that fails, makes the parallel restore give way
//! ([`Parallel::GaveWay`]): the caller empties the database and restores in one stream, whose
//! verdict is the one that counts. So a parallel restore never decides a verdict the one-stream
//! restore would not have given.

mod digest;
pub mod part;
pub mod plan;
mod queue;
mod rest;
mod session;
mod work;

pub use plan::{plan, Plan};

use super::stream::StreamError;
use super::{gate_rules, Attempt, RestoreError, StreamReport, Target};
use crate::infra::pg::psql::{Outcome, PsqlTransaction};
use crate::infra::storage::{DynStorage, Key, StorageError};
use crate::pipeline::stages::dumpscan::{GateRules, ScanResult};
use crate::records::manifest::Manifest;
use part::{Judge, PartRead, Sink};
use queue::Queue;
use session::{same_session, SESSION};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

/// How a parallel restore ended.
#[derive(Debug)]
pub enum Parallel {
    /// Restored and committed: what the one-stream restore would have reported, and how many
    /// sessions loaded table data.
    Done(Box<Attempt>, usize),
    /// Something was not exactly as recorded, or a session failed (why): empty the database and
    /// restore in one stream.
    GaveWay(String),
}

/// Where and how a parallel restore runs.
pub struct Sessions<'a> {
    /// Sessions loading table data at once, at most.
    pub jobs: usize,
    /// The manifest's signature was verified (`BACKUP_TRUSTED_KEYS`): its hashes, of the whole
    /// object and of each part, are the backup service's own, so parts that match theirs prove
    /// the object, which is then read once. Unsigned, a manifest's whole hash could disagree with
    /// its parts' (the one-stream restore would fail it), so the object is read whole too.
    pub signed: bool,
    /// The bound shared with other restores running at the same time: every data session but a
    /// restore's first holds a permit for as long as it lives.
    pub bound: &'a Semaphore,
}

/// What every phase needs.
struct Job<'a> {
    storage: &'a DynStorage,
    key: &'a Key,
    target: &'a Target<'a>,
    rules: GateRules,
}

impl Job<'_> {
    /// Reads `part` through the gate, into `sink`.
    async fn gated(
        &self,
        part: &plan::Part,
        sink: Sink<'_>,
        cancel: &CancellationToken,
    ) -> Result<(PartRead, Option<Outcome>), StreamError> {
        part::read(self.storage, self.key, part, Judge::Gate(self.rules.clone()), sink, cancel).await
    }
}

/// `Err(why)`: give way.
type Step<T> = Result<Result<T, String>, RestoreError>;

/// Restores `key` into `target` over several sessions as `plan` lays out.
///
/// # Errors
/// [`RestoreError`] when storage, shutdown or psql's start prevented an answer.
pub async fn restore_parallel(
    storage: &DynStorage,
    key: &Key,
    m: &Manifest,
    plan: &Plan,
    target: &Target<'_>,
    sessions: &Sessions<'_>,
    cancel: &CancellationToken,
) -> Result<Parallel, RestoreError> {
    // An object of another size than recorded (truncated, replaced) is the one stream's to judge;
    // past this, a ranged read that ends early is a broken download.
    let head = storage.head(key, cancel).await.map_err(|e| match e {
        StorageError::Cancelled => StreamError::Cancelled,
        e => StreamError::Storage(e),
    })?;
    let Some(head) = head.filter(|o| o.size == m.size) else {
        return Ok(Parallel::GaveWay("the object is not the size its manifest records".into()));
    };
    let job = Job {
        storage,
        key,
        target,
        rules: gate_rules(Some(m), target.strip),
    };
    // Unless every part's recorded hash is proven the backup service's own, a second read proves
    // the object whole.
    let reading = (!(sessions.signed && plan.proven_by_parts())).then(|| digest::start(storage, key, plan, cancel));
    let (scan, used) = match phases(&job, m, plan, sessions, reading, cancel).await? {
        Ok(done) => done,
        Err(why) => return Ok(Parallel::GaveWay(why)),
    };
    // The parts were read one by one: the object they came from must still be the one first seen.
    let now = storage.head(key, cancel).await.map_err(|e| match e {
        StorageError::Cancelled => StreamError::Cancelled,
        e => StreamError::Storage(e),
    })?;
    if now.as_ref().map(|o| (o.size, &o.etag)) != Some((head.size, &head.etag)) {
        return Ok(Parallel::GaveWay("the object changed while it was restored".into()));
    }
    let report = StreamReport {
        sha256: m.sha256.clone(),
        size: m.size,
        gzip_error: None,
        key_error: None,
        scan,
    };
    let problems = super::integrity_problems(Some(m), &report);
    if !problems.is_empty() {
        return Ok(Parallel::GaveWay(problems.join("; ")));
    }
    let attempt = Attempt {
        report,
        problems,
        outcome: Outcome::Committed,
    };
    Ok(Parallel::Done(Box::new(attempt), used))
}

/// The three phases: what the gate found in all of them, and how many sessions loaded data. Where
/// a second read proves the object (`reading`), it runs beside the first two phases, and phase 3
/// does not start before it has proven the object what the manifest records.
async fn phases(
    job: &Job<'_>,
    m: &Manifest,
    plan: &Plan,
    sessions: &Sessions<'_>,
    reading: Option<digest::Reading>,
    cancel: &CancellationToken,
) -> Step<(ScanResult, usize)> {
    // The schema loads while the runs between blocks and what follows the data are read: the
    // latter's index builds run as their tables' data commits.
    let (before, runs, after) = tokio::join!(
        schema(job, plan, cancel),
        between(job, plan, cancel),
        rest::read(job, plan, sessions, cancel)
    );
    // A part not as recorded gives way even when another read failed (the one stream then judges).
    let gave_way = [
        before.as_ref().ok().and_then(|r| r.as_ref().err()),
        runs.as_ref().ok().and_then(|r| r.as_ref().err()),
        after.as_ref().ok().and_then(|r| r.as_ref().err()),
    ]
    .into_iter()
    .flatten()
    .next()
    .cloned();
    if let Some(why) = gave_way {
        return Ok(Err(why));
    }
    let (Ok(before), Ok(runs), Ok(mut after)) = (before?, runs?, after?) else {
        return Ok(Err("a part was not as recorded".into()));
    };
    let builds = match &mut after {
        rest::After::Held(held) => std::mem::take(&mut held.builds),
        rest::After::Streamed => Vec::new(),
    };
    let work = Queue::new(plan.blocks.clone(), builds);
    let (blocks, used) = match work::spread(job, work, sessions, cancel).await? {
        Ok(done) => done,
        Err(why) => return Ok(Err(why)),
    };
    if let Some(mut reading) = reading {
        let proof = match digest::proven(&mut reading, m, plan).await? {
            Ok(proof) => proof,
            Err(why) => return Ok(Err(why)),
        };
        if let Some((_, _, what)) = runs.iter().find(|(offset, sha256, _)| proof.parts.get(offset) != Some(sha256)) {
            return Ok(Err(format!("{what} changed while they were read")));
        }
    }
    let after = match rest::finish(job, m, plan, after, cancel).await? {
        Ok(scan) => scan,
        Err(why) => return Ok(Err(why)),
    };
    let whole = blocks.into_iter().fold(before, ScanResult::then).then(after);
    if whole.too_many_entries() {
        return Ok(Err("the parts together name more tables and objects than one stream reads".into()));
    }
    Ok(Ok((whole, used)))
}

/// A session that starts mid-dump, with pg_dump's session settings.
async fn session(target: &Target<'_>) -> Result<PsqlTransaction, RestoreError> {
    Ok(PsqlTransaction::begin(target.psql, target.url, SESSION).await?)
}

/// What the server did, in a few words.
fn said(outcome: &Outcome) -> String {
    match outcome {
        Outcome::Committed => "it committed".into(),
        Outcome::RolledBack(Some(f)) | Outcome::NotStarted(f) => f.to_string(),
        Outcome::RolledBack(None) => "it was rolled back".into(),
        Outcome::Unknown(f) | Outcome::EndedEarly(f) => format!("its end is not pgvigil's ({f})"),
    }
}

/// Commits `tx`; `Err(why)` unless the server committed it.
async fn committed(tx: &mut PsqlTransaction, guard: Option<&str>, what: &str, cancel: &CancellationToken) -> Step<()> {
    match tx.commit(guard, cancel).await {
        Outcome::Committed => Ok(Ok(())),
        _ if cancel.is_cancelled() => Err(StreamError::Cancelled.into()),
        other => Ok(Err(format!("{what} did not commit: {}", said(&other)))),
    }
}

/// `Err(why)` when psql stopped, or the part is not as recorded or does not end cleanly.
fn as_recorded(read: &PartRead, stopped: Option<&Outcome>, part: &plan::Part, what: &str) -> Result<(), String> {
    if let Some(outcome) = stopped {
        return Err(format!("{what}: psql stopped: {}", said(outcome)));
    }
    if let Some(why) = read.differs(part, what) {
        return Err(why);
    }
    if !read.ends_cleanly {
        return Err(format!("{what} does not end where a statement may begin"));
    }
    Ok(())
}

/// Phase 1: the schema before the data, committed once its part is proven by its recorded hash.
async fn schema(job: &Job<'_>, plan: &Plan, cancel: &CancellationToken) -> Step<ScanResult> {
    let mut tx = PsqlTransaction::begin(job.target.psql, job.target.url, job.target.preamble).await?;
    let what = "the schema before the data";
    let (read, stopped) = job.gated(&plan.before, Sink::Psql(&mut tx), cancel).await?;
    let checked = as_recorded(&read, stopped.as_ref(), &plan.before, what)
        .and_then(|()| same_session(&read.settings))
        .and_then(|()| match (read.scan.copies.is_empty(), read.restrict.1) {
            (true, false) => Ok(()),
            _ => Err(format!("{what} holds COPY data or the dump's closing lines")),
        });
    if let Err(why) = checked {
        tx.rollback().await;
        return Ok(Err(why));
    }
    Ok(committed(&mut tx, None, what, cancel).await?.map(|()| read.scan))
}

/// The runs between COPY blocks: comments only, and the bytes their recorded hash says. Each run's
/// offset, SHA-256 as read, and name, for the second read (where there is one) to prove.
async fn between(job: &Job<'_>, plan: &Plan, cancel: &CancellationToken) -> Step<Vec<(u64, String, String)>> {
    let mut runs = Vec::with_capacity(plan.between.len());
    for run in &plan.between {
        let (read, _) = part::read(job.storage, job.key, run, Judge::CommentsOnly, Sink::Nowhere, cancel).await?;
        let what = format!("bytes {} to {} of the object", run.offset, run.offset + run.length);
        if let Some(why) = read.differs(run, &what) {
            return Ok(Err(why));
        }
        runs.push((run.offset, read.sha256, what));
    }
    Ok(Ok(runs))
}
