//! One runner for both daemons: wait until the job is due, run it, log and count failures, back
//! off after failures, never exit on a failed run. The wait is cancellable and a run in
//! progress gets a shutdown deadline.

use super::health::Health;
use super::retry::{sleep_or_cancel, Backoff};
use async_trait::async_trait;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// Why a run failed, as the runner needs to know it.
#[derive(Debug, Clone)]
pub struct RunFailure {
    /// Plain description (already logged by the job).
    pub message: String,
    /// False when the cause is not expected to go away by itself (logged louder).
    pub retryable: bool,
    /// One word for `pgvigil_failures_total{cause}`: `database`, `storage`, `dump`, …
    pub cause: &'static str,
}

impl RunFailure {
    /// Nothing to do yet (no backup to verify), or another instance is doing it (its lease):
    /// waited out, not counted as a failure — a standby must not raise alarms while the backups
    /// it watches are fresh.
    fn is_waiting(&self) -> bool {
        matches!(self.cause, "no_backup" | "busy")
    }
}

/// A job the runner drives.
#[async_trait]
pub trait Job: Send + Sync {
    /// Noun for log lines: `Next backup in 60s`.
    fn noun(&self) -> &'static str;

    /// Time until the next run is due (zero when overdue).
    ///
    /// # Errors
    /// When the schedule cannot be determined (e.g. storage down); the runner backs off.
    async fn due_in(&self, cancel: &CancellationToken) -> Result<Duration, RunFailure>;

    /// Runs once. Must stop promptly when `cancel` fires.
    ///
    /// # Errors
    /// A failed run; the runner retries with backoff.
    async fn run(&self, cancel: &CancellationToken) -> Result<(), RunFailure>;
}

/// How long a run may take to wind down after shutdown was requested.
pub const SHUTDOWN_DEADLINE: Duration = Duration::from_secs(8);

/// Drives `job` until `cancel` fires. Never returns early because of a failed run.
pub async fn run_forever(job: &dyn Job, mut backoff: Backoff, health: &Health, cancel: &CancellationToken) {
    let noun = job.noun();
    while !cancel.is_cancelled() {
        let wait = match job.due_in(cancel).await {
            Ok(d) => d,
            Err(f) => {
                let delay = backoff.next_delay();
                health.record_failure(f.cause, None);
                warn!(error = %f.message, "Could not determine when the next {noun} is due; retrying in {}s", delay.as_secs());
                if !sleep_or_cancel(delay, cancel).await {
                    break;
                }
                continue;
            }
        };
        info!("Next {noun} in {}s", wait.as_secs());
        if !sleep_or_cancel(wait, cancel).await {
            break;
        }
        let run_cancel = cancel.child_token();
        let started = std::time::Instant::now();
        let run = job.run(&run_cancel);
        tokio::pin!(run);
        let result = tokio::select! {
            r = &mut run => r,
            () = cancel.cancelled() => {
                // Give the run a bounded time to abort uploads and drop scratch databases.
                match tokio::time::timeout(SHUTDOWN_DEADLINE, &mut run).await {
                    Ok(r) => r,
                    Err(_) => Err(RunFailure { message: "did not stop within the shutdown deadline".into(), retryable: false, cause: "shutdown" }),
                }
            }
        };
        if cancel.is_cancelled() {
            break;
        }
        match result {
            Ok(()) => {
                backoff.reset();
                health.record_success(started.elapsed());
            }
            Err(f) if f.is_waiting() => {
                if !sleep_or_cancel(backoff.next_delay(), cancel).await {
                    break;
                }
            }
            Err(f) => {
                health.record_failure(f.cause, Some(started.elapsed()));
                let delay = backoff.next_delay();
                if f.retryable {
                    info!(
                        "Retrying the {noun} in {}s (attempt {} failed)",
                        delay.as_secs(),
                        backoff.failures()
                    );
                } else {
                    warn!(
                        "Retrying the {noun} in {}s, but this failure needs attention: {}",
                        delay.as_secs(),
                        f.message
                    );
                }
                if !sleep_or_cancel(delay, cancel).await {
                    break;
                }
            }
        }
    }
    info!("Shutdown requested; {noun} service stopped");
}

#[cfg(test)]
mod tests {
    use super::*;
    use pgvigil_core::infra::config::Role;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::Arc;
    use tokio::time::Instant;

    /// A job that always succeeds and records when it ran.
    struct Flaky {
        runs: AtomicU32,
        times: std::sync::Mutex<Vec<Instant>>,
        interval: Duration,
    }

    #[async_trait]
    impl Job for Flaky {
        fn noun(&self) -> &'static str {
            "test"
        }
        async fn due_in(&self, _c: &CancellationToken) -> Result<Duration, RunFailure> {
            Ok(if self.runs.load(Ordering::SeqCst) == 0 {
                Duration::ZERO
            } else {
                self.interval
            })
        }
        async fn run(&self, _c: &CancellationToken) -> Result<(), RunFailure> {
            self.times.lock().unwrap().push(Instant::now());
            self.runs.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }
    }

    #[tokio::test(start_paused = true)]
    async fn failures_are_retried_with_backoff_not_after_a_full_interval() {
        let job = Arc::new(Flaky {
            runs: AtomicU32::new(0),
            times: Default::default(),
            interval: Duration::from_secs(3600),
        });
        let failing = Arc::new(FailTwice {
            inner: job.clone(),
            failed: AtomicU32::new(0),
        });
        let cancel = CancellationToken::new();
        let health = Health::new(Duration::from_secs(7200), Role::Verify);
        let start = Instant::now();
        let c2 = cancel.clone();
        let f2 = failing.clone();
        let h = tokio::spawn(async move {
            run_forever(
                f2.as_ref(),
                Backoff::new(Duration::from_secs(30), Duration::from_secs(600)),
                &health,
                &c2,
            )
            .await
        });
        tokio::time::sleep(Duration::from_secs(3 * 3600)).await;
        cancel.cancel();
        h.await.unwrap();
        let offsets: Vec<u64> = job.times.lock().unwrap().iter().map(|t| (*t - start).as_secs()).collect();
        // Fail at 0, retry after 30 s, fail, retry after 60 s, succeed at 90 s, then hourly.
        assert_eq!(offsets, vec![0, 30, 90, 3690, 7290]);
    }

    struct FailTwice {
        inner: Arc<Flaky>,
        failed: AtomicU32,
    }

    #[async_trait]
    impl Job for FailTwice {
        fn noun(&self) -> &'static str {
            "test"
        }
        async fn due_in(&self, c: &CancellationToken) -> Result<Duration, RunFailure> {
            self.inner.due_in(c).await
        }
        async fn run(&self, c: &CancellationToken) -> Result<(), RunFailure> {
            if self.failed.fetch_add(1, Ordering::SeqCst) < 2 {
                self.inner.times.lock().unwrap().push(Instant::now());
                return Err(RunFailure {
                    message: "down".into(),
                    retryable: true,
                    cause: "test",
                });
            }
            self.inner.run(c).await
        }
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_interrupts_the_wait_at_once() {
        let job = Flaky {
            runs: AtomicU32::new(1),
            times: Default::default(),
            interval: Duration::from_secs(86_400),
        };
        let cancel = CancellationToken::new();
        let health = Health::new(Duration::from_secs(1), Role::Verify);
        let c2 = cancel.clone();
        let start = Instant::now();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(5)).await;
            c2.cancel();
        });
        run_forever(
            &job,
            Backoff::new(Duration::from_secs(30), Duration::from_secs(600)),
            &health,
            &cancel,
        )
        .await;
        assert!(start.elapsed() < Duration::from_secs(6));
        assert!(job.times.lock().unwrap().is_empty());
    }
}
