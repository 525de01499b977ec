//! Phase 2: the sessions that load the tables' data and build their indexes, taking work from the
//! [`Queue`] until nothing is left. A session commits when builds wait for data it holds (once it
//! holds [`COMMIT_AFTER`] of data, or when it has nothing else to do), before a large block when it
//! holds builds, and at its end.

use super::part::Sink;
use super::plan::Block;
use super::queue::{self, Next, Queue, Table, Work};
use super::{as_recorded, committed, said, session, Job, Sessions, Step};
use crate::infra::pg::psql::PsqlTransaction;
use crate::pipeline::restore::stream::StreamError;
use crate::pipeline::restore::RestoreError;
use crate::pipeline::stages::dumpscan::ScanResult;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

/// The data, and the index builds as their tables' data commits ([`queue`]), over up to `jobs`
/// sessions. What the gate found in the blocks, and how many sessions did work.
pub(super) async fn spread(
    job: &Job<'_>,
    work: Queue,
    sessions: &Sessions<'_>,
    cancel: &CancellationToken,
) -> Step<(Vec<ScanResult>, usize)> {
    let count = work.len();
    let queue = std::sync::Mutex::new(work);
    // One session giving way, or failing, stops the others.
    let stop = cancel.child_token();
    let (queue, stop) = (&queue, &stop);
    let workers = (0..sessions.jobs.clamp(1, count.max(1))).map(|i| async move {
        let bound = (i > 0).then_some(sessions.bound);
        let done = worker(job, queue, bound, stop).await;
        if !matches!(done, Ok(Ok(_))) {
            stop.cancel();
        }
        done
    });
    let results = futures::future::join_all(workers).await;
    let mut scans = Vec::new();
    let mut used = 0;
    let mut gave_way = None;
    let mut failed = None;
    for r in results {
        match r {
            Ok(Ok((mut s, worked))) => {
                used += usize::from(worked);
                scans.append(&mut s);
            }
            Ok(Err(why)) => {
                gave_way.get_or_insert(why);
            }
            Err(RestoreError::Stream(StreamError::Cancelled)) if !cancel.is_cancelled() => {}
            Err(e) => {
                failed.get_or_insert(e);
            }
        }
    }
    match (failed, gave_way) {
        (Some(e), _) => Err(e),
        (None, Some(why)) => Ok(Err(why)),
        (None, None) if stop.is_cancelled() && !cancel.is_cancelled() => Ok(Err("a session stopped".into())),
        (None, None) => Ok(Ok((scans, used))),
    }
}

/// Compressed bytes of table data a session loads before it commits to let builds start that wait
/// for it, and the size of a block that a session holding builds commits before (small tables' data
/// and builds are committed together, so that each does not cost a psql of its own).
const COMMIT_AFTER: u64 = 16 << 20;

/// One session's transaction: the blocks it holds that are not committed yet, and whether it
/// built indexes (holding their locks).
#[derive(Default)]
struct Open {
    tx: Option<PsqlTransaction>,
    tables: Vec<Option<Table>>,
    bytes: u64,
    builds: bool,
}

impl Open {
    /// Commits what is open, and lets the builds start that waited for it.
    async fn commit(&mut self, queue: &std::sync::Mutex<Queue>, stop: &CancellationToken) -> Step<()> {
        let Some(mut tx) = self.tx.take() else { return Ok(Ok(())) };
        if let Err(why) = committed(&mut tx, None, "a session", stop).await? {
            return Ok(Err(why));
        }
        if let Ok(mut q) = queue.lock() {
            q.committed(&self.tables);
        }
        self.tables.clear();
        self.bytes = 0;
        self.builds = false;
        Ok(Ok(()))
    }
}

/// One session: work from the queue until nothing is left, committing when builds wait for the
/// data it holds, before a large block when it holds builds (and their locks), and at its end.
/// Every session but a restore's first holds a permit of the shared bound (`bound`) while it has
/// work or a transaction open, never while it only waits. What the gate found in the blocks it
/// loaded, and whether it loaded any.
async fn worker(
    job: &Job<'_>,
    queue: &std::sync::Mutex<Queue>,
    bound: Option<&Semaphore>,
    stop: &CancellationToken,
) -> Step<(Vec<ScanResult>, bool)> {
    let pause = || tokio::time::sleep(std::time::Duration::from_millis(50));
    let mut permit = None;
    // The wait for a permit is kept while the queue is looked at again, so that the session keeps
    // its place among the other restores waiting for the bound.
    let mut waiting = None;
    let mut open = Open::default();
    let mut scans = Vec::new();
    let mut loaded_data = false;
    loop {
        if let (Some(b), None) = (bound, &permit) {
            // A permit is waited for only while there is something to do.
            if queue.lock().map_or(true, |q| q.is_done()) {
                break;
            }
            let acquire = waiting.get_or_insert_with(|| Box::pin(b.acquire()));
            tokio::select! {
                p = acquire => {
                    waiting = None;
                    permit = Some(p.map_err(|_| StreamError::Cancelled)?);
                }
                () = stop.cancelled() => return Err(StreamError::Cancelled.into()),
                () = pause() => continue,
            }
        }
        // (The queue's lock is held only while work is taken.)
        let next = queue.lock().map_or(Next::Done, |mut q| q.next());
        let work = match next {
            Next::Done => break,
            // Builds wait for data not yet committed: this session's, if it holds any.
            Next::Wait if open.tx.is_some() => {
                if let Err(why) = open.commit(queue, stop).await? {
                    return Ok(Err(why));
                }
                continue;
            }
            Next::Wait => {
                permit = None;
                tokio::select! {
                    () = stop.cancelled() => return Err(StreamError::Cancelled.into()),
                    () = pause() => continue,
                }
            }
            Next::Work(work) => work,
        };
        if open.tx.is_none() {
            open.tx = Some(session(job.target).await?);
        }
        let Some(session) = open.tx.as_mut() else { break };
        let done = match work {
            Work::Block(block) => {
                loaded_data = true;
                let loaded = load(job, session, &block, stop).await?;
                open.tables.push(queue::table_of(&block));
                open.bytes += block.part.length;
                loaded
            }
            Work::Builds(table, sql) => {
                open.builds = true;
                tokio::select! {
                    biased;
                    () = stop.cancelled() => return Err(StreamError::Cancelled.into()),
                    () = session.write(&sql) => {}
                }
                match session.environment_failure().await {
                    Some(outcome) => Err(format!("building the indexes of {table}: psql stopped: {}", said(&outcome))),
                    None if session.is_broken() => Err(format!("building the indexes of {table}: psql stopped")),
                    None => Ok(None),
                }
            }
        };
        match done {
            Ok(scan) => scans.extend(scan),
            Err(why) => return Ok(Err(why)),
        }
        let commit = queue.lock().is_ok_and(|q| {
            // Builds wait for the data held; or the locks of builds would be held through a
            // large block.
            (open.bytes >= COMMIT_AFTER && q.would_release(&open.tables)) || (open.builds && q.large_block_next(COMMIT_AFTER))
        });
        if commit {
            if let Err(why) = open.commit(queue, stop).await? {
                return Ok(Err(why));
            }
        }
    }
    if let Err(why) = open.commit(queue, stop).await? {
        return Ok(Err(why));
    }
    Ok(Ok((scans, loaded_data)))
}

/// Loads one table's block into `tx`: what the gate found, or why it is not exactly one COPY
/// block of its rows.
async fn load(job: &Job<'_>, tx: &mut PsqlTransaction, block: &Block, stop: &CancellationToken) -> Step<Option<ScanResult>> {
    let what = format!("the data of {}", block.table);
    let (read, stopped) = job.gated(&block.part, Sink::Psql(&mut *tx), stop).await?;
    if let Err(why) = as_recorded(&read, stopped.as_ref(), &block.part, &what) {
        return Ok(Err(why));
    }
    if tx.is_broken() {
        return Ok(Err(format!("loading {what}: psql stopped")));
    }
    let s = &read.scan;
    let exact = matches!(s.copies.as_slice(), [c] if c.table == block.table && c.rows == block.rows && c.begin == 0 && c.end == s.bytes);
    if !exact
        || s.transaction_lines > 0
        || s.privilege_lines_removed > 0
        || s.subscription_lines_removed > 0
        || read.restrict != (false, false)
    {
        return Ok(Err(format!("{what} is not exactly one COPY block of its {} rows", block.rows)));
    }
    Ok(Ok(Some(read.scan)))
}
