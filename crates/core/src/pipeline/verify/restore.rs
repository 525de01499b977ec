//! The restore of a verification: over several sessions when the backup allows it
//! ([`crate::pipeline::restore::parallel`]), else — and whenever the parallel restore gives way —
//! in one stream.

use super::run::Run;
use crate::infra::pg;
use crate::pipeline::restore::{parallel, restore_into, Attempt, RestoreError, Target};
use crate::records::history::Evidence;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;
use tracing::info;

/// Restores over several sessions when the backup allows it ([`parallel`]; anything not as
/// recorded makes it give way: the scratch database is made anew and the restore runs in one
/// stream, whose verdict counts), else in one stream. With the attempt, when the restore that
/// decided it began, and the deadline it had (the checks after it have what is left of that
/// deadline from then).
pub(super) async fn restore(
    run: &Run<'_>,
    target: &Target<'_>,
    evidence: &mut Evidence,
    cancel: &CancellationToken,
) -> Result<(Attempt, Instant, Duration), RestoreError> {
    let storage = run.ctx.storage.as_ref();
    let started = Instant::now();
    let one_stream = || async { restore_into(storage, run.key, Some(run.manifest), target, None, cancel).await };
    let allowed = run.deadline;
    let jobs = run.ctx.cfg.jobs;
    if jobs < 2 {
        return Ok((one_stream().await?, started, allowed));
    }
    let plan = match parallel::plan(run.manifest) {
        Ok(plan) => plan,
        Err(why) => {
            info!("restoring {} in one stream: {why}", run.key);
            evidence.one_stream = Some(why.into());
            return Ok((one_stream().await?, started, allowed));
        }
    };
    let sessions = parallel::Sessions {
        jobs,
        bound: &run.ctx.sessions,
        // With trusted keys, only a manifest whose signature was verified gets this far.
        signed: run.ctx.trusted.is_set(),
    };
    let deadline = target.deadline.map(|d| tokio::time::Instant::now() + d);
    let restored = crate::pipeline::restore::before(
        deadline,
        parallel::restore_parallel(&run.ctx.storage, run.key, run.manifest, &plan, target, &sessions, cancel),
    )
    .await;
    let why = match restored {
        Some(Ok(parallel::Parallel::Done(attempt, used))) => {
            info!(sessions = used, "restored {} over several sessions", run.key);
            evidence.restore_sessions = u32::try_from(used).ok();
            return Ok((*attempt, started, allowed));
        }
        Some(Ok(parallel::Parallel::GaveWay(why))) => why,
        Some(Err(e)) => return Err(e),
        // Shared sessions (and, unsigned, two reads): running out of time here says nothing of
        // the backup.
        None => "it did not finish within the deadline".into(),
    };
    let why: String = why.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
    info!("the parallel restore of {} gave way to one stream: {why}", run.key);
    evidence.one_stream = Some(format!("the parallel restore gave way: {why}"));
    let admin_url = &run.ctx.database_url;
    let mut admin = pg::connect(admin_url).await?;
    let made = async {
        pg::scratch::drop(&mut admin, admin_url, run.scratch).await?;
        pg::scratch::create(&mut admin, admin_url, run.scratch).await
    }
    .await;
    pg::close(admin).await;
    made?;
    // The one stream gets the whole deadline, and decides the verdict. A deadline derived from
    // recent verifications (no VERIFY_TIMEOUT) measured restores over `jobs` sessions: one stream
    // may take up to that many times as long without anything being wrong with the backup.
    let deciding = Instant::now();
    if run.ctx.cfg.timeout.is_some() {
        return Ok((one_stream().await?, deciding, allowed));
    }
    // (At most four times: a backup that forces the fallback is not given a day by it.)
    let scaled = allowed.saturating_mul(u32::try_from(jobs.min(4)).unwrap_or(4));
    let longer = scaled.min(crate::pipeline::restore::DEADLINE_CEILING).max(allowed);
    let target = Target {
        deadline: Some(longer),
        ..*target
    };
    let attempt = restore_into(storage, run.key, Some(run.manifest), &target, None, cancel).await?;
    Ok((attempt, deciding, longer))
}
