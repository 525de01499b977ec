//! The restore of a verification: over several sessions when the backup allows it
//! ([`crate::pipeline::restore::parallel`]), else — and whenever the parallel restore gives way —
//! in one stream.

use super::run::Run;
use crate::infra::pg;
use crate::pipeline::restore::{parallel, restore_into, Attempt, RestoreError, Target};
use crate::records::history::Evidence;
use tokio_util::sync::CancellationToken;
use tracing::info;

/// Restores over several sessions when the backup allows it ([`parallel`]; anything not as
/// recorded makes it give way: the scratch database is made anew and the restore runs in one
/// stream, whose verdict counts), else in one stream.
pub(super) async fn restore(
    run: &Run<'_>,
    target: &Target<'_>,
    evidence: &mut Evidence,
    cancel: &CancellationToken,
) -> Result<Attempt, RestoreError> {
    let storage = run.ctx.storage.as_ref();
    let jobs = run.ctx.cfg.jobs;
    if jobs < 2 {
        return restore_into(storage, run.key, Some(run.manifest), target, None, cancel).await;
    }
    let plan = match parallel::plan(run.manifest) {
        Ok(plan) => plan,
        Err(why) => {
            info!("restoring {} in one stream: {why}", run.key);
            evidence.one_stream = Some(why.into());
            return restore_into(storage, run.key, Some(run.manifest), target, None, cancel).await;
        }
    };
    let sessions = parallel::Sessions {
        jobs,
        bound: &run.ctx.sessions,
    };
    let deadline = target.deadline.map(|d| tokio::time::Instant::now() + d);
    let restored = crate::pipeline::restore::before(
        deadline,
        parallel::restore_parallel(&run.ctx.storage, run.key, run.manifest, &plan, target, &sessions, cancel),
    )
    .await;
    match restored.ok_or(RestoreError::TimedOut(target.deadline.unwrap_or_default()))?? {
        parallel::Parallel::Done(attempt) => {
            let used = jobs.min(plan.blocks.len());
            info!(sessions = used, "restored {} over several sessions", run.key);
            evidence.restore_sessions = u32::try_from(used).ok();
            Ok(*attempt)
        }
        parallel::Parallel::GaveWay(why) => {
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
            // The one stream gets the whole deadline: the parallel restore may have given way
            // because of the environment, and running out of time may blame the backup.
            restore_into(storage, run.key, Some(run.manifest), target, None, cancel).await
        }
    }
}
